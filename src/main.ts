/**
 * `qbd`: parse the command line, start the daemon, report readiness.
 * With --daemonize the process re-runs itself detached and exits 0 once the
 * child reports that every socket listens, or 1 with the child's error.
 */
import { spawn } from 'node:child_process';
import { CommandLineError, parseCommandLine, type ParsedCommandLine } from './cli/command-line';
import { helpText, versionText } from './cli/help';
import { Daemon, StartupError } from './daemon';
import { qbdVersion } from './version';

const DAEMON_CHILD = 'QBD_DAEMONIZED_CHILD';

function fail(message: string): never {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n');
  process.exit(1);
}

function parseOrExit(argv: string[]): ParsedCommandLine {
  try {
    return parseCommandLine(argv);
  } catch (err) {
    if (err instanceof CommandLineError) {
      if (err.stdout) process.stdout.write(err.stdout);
      fail(err.message);
    }
    throw err;
  }
}

/** The parent side of --daemonize: waits for the child's word. */
function daemonize(argv: string[]): void {
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    env: { ...process.env, [DAEMON_CHILD]: '1' },
  });
  child.on('message', (msg: { ready?: boolean; error?: string }) => {
    if (msg.ready) process.exit(0);
    fail(msg.error ?? 'qbd: daemon failed to start');
  });
  child.on('exit', (code) => fail(`qbd: daemon exited during start-up (status ${code})`));
}

export function main(argv: string[]): void {
  const parsed = parseOrExit(argv);
  if (parsed.help) {
    process.stdout.write(helpText());
    return;
  }
  if (parsed.version) {
    process.stdout.write(versionText(qbdVersion));
    return;
  }
  const wantsDaemon = parsed.actions.some((a) => a.option === 'daemonize');
  const isChild = process.env[DAEMON_CHILD] === '1';
  if (wantsDaemon && !isChild) {
    daemonize(argv);
    return;
  }
  void start(parsed, isChild);
}

async function start(parsed: ParsedCommandLine, isChild: boolean): Promise<void> {
  const report = (msg: { ready?: boolean; error?: string }): void => {
    if (isChild && process.send) {
      process.send(msg);
      process.disconnect?.();
    }
  };
  try {
    for (const action of parsed.actions) {
      if ('warnings' in action) for (const w of action.warnings ?? []) process.stderr.write(w + '\n');
    }
    const daemon = new Daemon();
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => void daemon.quit());
    await daemon.apply(parsed.actions);
    if (parsed.actions.length === 0) {
      const sock = await daemon.addDefaultMonitor();
      process.stderr.write(`qbd: QMP monitor listening on ${sock}\n`);
    }
    daemon.startupDone();
    report({ ready: true });
  } catch (err) {
    const message = err instanceof StartupError ? err.message : `qbd: ${(err as Error).message}`;
    report({ error: message });
    fail(message);
  }
}
