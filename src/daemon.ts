/**
 * The daemon: applies the command line in order (nodes, character devices,
 * monitors, objects), serves monitors until quit or a signal, then flushes
 * and closes every node and leaves no socket or pidfile behind.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { log, setLogLevel } from './common/log';
import { assertMainLoop } from './common/thread-context';
import type { CommandLineAction } from './cli/command-line';
import { keyvalTyping } from './cli/keyval-typing';
import { blockdevAdd, closeAllNodes } from './block/global-state/blockdev';
import { stopAllContexts } from './block/global-state/io-contexts';
import { objectAdd, objectTypesHelp } from './objects/objects';
import { chardevBackendFromOptions } from './cli/chardev-backend';
import { chardevBackendsHelp } from './qmp/chardev/backends';
import { attachFrontend, chardevAddFromCommandLine, closeAllChardevs, findChardev } from './qmp/chardev/registry';
import { chardevCommands } from './qmp/commands/chardev';
import { qomCommands } from './qmp/commands/qom';
import { blockCommands } from './qmp/commands/block';
import { chainCommands } from './qmp/commands/chain';
import { dirtyBitmapCommands } from './qmp/commands/dirty-bitmaps';
import { controlCommands } from './qmp/commands/control';
import { jobCommands } from './qmp/commands/jobs';
import { backingChainCommands } from './qmp/commands/backing-chain';
import { blockJobCommands } from './qmp/commands/block-jobs';
import { transactionCommands } from './qmp/commands/transaction';
// Registers the backup actions of `transaction`.
import './jobs/backup-transaction';
import { cancelAllJobs } from './jobs/job-registry';
import { objectCommands } from './qmp/commands/objects';
import { exportCommands } from './qmp/commands/exports';
import { blockExportAdd, shutdownExports, type BlockExportOptions } from './exports/export-registry';
import { listenAddress, nbdServerStart } from './exports/nbd/server-gs';
import { Dispatcher } from './qmp/dispatcher';
import { QmpError } from './qmp/errors';
import { runExclusive } from './qmp/gs-queue';
import { MonitorSession } from './qmp/monitor';
import { loadSchema, SCHEMA_DIR, type Schema } from './qmp/schema/schema';
import { ArgumentValidator } from './qmp/schema/validator';
import { TOP, Visitor } from './qmp/schema/visitor';
import { versionInfo } from './version';

/** An error that ends start-up: printed as one line, exit status 1. */
export class StartupError extends Error {}

export class Daemon {
  readonly schema: Schema;
  private readonly dispatcher: Dispatcher;
  private pidfile: string | undefined;
  private quitting = false;
  private markStarted!: () => void;
  /** Monitors wait for this before they greet anyone. */
  private readonly started = new Promise<void>((resolve) => (this.markStarted = resolve));

  constructor() {
    assertMainLoop();
    this.schema = loadSchema(SCHEMA_DIR);
    const validator = new ArgumentValidator(this.schema);
    this.dispatcher = new Dispatcher(this.schema, validator, [
      ...controlCommands(this.schema, () => void this.quit()),
      ...blockCommands(),
      ...chainCommands(),
      ...dirtyBitmapCommands(),
      ...objectCommands(),
      ...jobCommands(),
      ...blockJobCommands(),
      ...backingChainCommands(),
      ...transactionCommands(),
      ...exportCommands(),
      ...qomCommands(this.schema),
      ...chardevCommands(),
    ]);
  }

  /** Types an option value: JSON as QMP would, key=value strings as QEMU's keyval visitor would. */
  private typed(action: Extract<CommandLineAction, { value: unknown }>, type: string): Record<string, unknown> {
    const visitor = action.option !== 'trace' && action.json ? new Visitor(this.schema) : new Visitor(this.schema, keyvalTyping);
    return visitor.visit(action.value, type, TOP) as Record<string, unknown>;
  }

  async apply(actions: CommandLineAction[]): Promise<void> {
    assertMainLoop();
    for (const action of actions) {
      try {
        await this.applyOne(action);
      } catch (err) {
        const where = 'location' in action ? `${action.location}: ` : '';
        const hint = err instanceof QmpError && err.hint ? `\n${err.hint}` : '';
        throw new StartupError(`qbd: ${where}${(err as Error).message}${hint}`);
      }
    }
  }

  private async applyOne(action: CommandLineAction): Promise<void> {
    switch (action.option) {
      case 'blockdev':
        await blockdevAdd(this.typed(action, 'BlockdevOptions'));
        return;
      case 'object':
        if (action.help) {
          process.stdout.write(objectTypesHelp());
          process.exit(0);
        }
        objectAdd(this.typed(action, 'ObjectOptions'));
        return;
      case 'chardev': {
        const backend = (action.value as Record<string, unknown>).backend;
        if (backend === 'help' || backend === '?') {
          process.stdout.write(chardevBackendsHelp());
          process.exit(0);
        }
        await this.addChardev(action.value as Record<string, unknown>);
        return;
      }
      case 'monitor':
        this.addMonitor(action.value as Record<string, unknown>);
        return;
      case 'nbd-server': {
        const opts = this.typed(action, 'NbdServerOptions') as { addr: Record<string, unknown>; 'tls-creds'?: string; 'tls-authz'?: string; 'max-connections'?: number };
        const config: Parameters<typeof nbdServerStart>[0] = { address: listenAddress(opts.addr, false), maxConnections: opts['max-connections'] ?? 0 };
        if (opts['tls-creds'] !== undefined) config.tlsCreds = opts['tls-creds'];
        if (opts['tls-authz'] !== undefined) config.tlsAuthz = opts['tls-authz'];
        await nbdServerStart(config);
        return;
      }
      case 'export':
        await blockExportAdd(this.typed(action, 'BlockExportOptions') as unknown as BlockExportOptions);
        return;
      case 'pidfile':
        this.pidfile = path.resolve(action.path);
        return;
      case 'daemonize':
        return;
      case 'trace':
        setLogLevel('debug');
        return;
    }
  }

  private async addChardev(opts: Record<string, unknown>): Promise<void> {
    const { id, backend } = chardevBackendFromOptions(opts);
    await chardevAddFromCommandLine(id, backend);
  }

  private addMonitor(opts: Record<string, unknown>): void {
    const chardevId = opts.chardev as string | undefined;
    if (!chardevId) throw new Error(`Parameter 'chardev' is missing`);
    const chardev = findChardev(chardevId);
    if (!chardev) throw new Error(`chardev "${chardevId}" not found`);
    if (opts.mode !== undefined && opts.mode !== 'control') throw new Error(`Only QMP is supported`);
    const pretty = opts.pretty !== undefined && (opts.pretty === true || keyvalTyping.bool(String(opts.pretty), 'pretty'));
    attachFrontend(chardevId, (transport) => new MonitorSession(transport, this.dispatcher, { pretty, greeting: () => ({ version: versionInfo(), capabilities: chardev.offersOob ? ['oob'] : [] }), started: this.started }));
  }

  /** With no command line at all: a monitor on a private UNIX socket, so `qbd` alone is useful. */
  async addDefaultMonitor(): Promise<string> {
    const dir = defaultRuntimeDir();
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    const sock = path.join(dir, 'qmp.sock');
    await this.addChardev({ backend: 'socket', id: 'qmp0', path: sock, server: true, wait: false });
    fs.chmodSync(sock, 0o600);
    this.addMonitor({ chardev: 'qmp0' });
    return sock;
  }

  /**
   * The command line is applied: writes the pidfile (our pid and a trailing
   * newline, as QEMU's) and lets the monitors serve.
   */
  startupDone(): void {
    assertMainLoop();
    if (this.pidfile) fs.writeFileSync(this.pidfile, `${process.pid}\n`);
    this.markStarted();
  }

  /** quit, SIGTERM, SIGINT, SIGHUP: flush and close every node, then exit 0. */
  async quit(): Promise<void> {
    assertMainLoop();
    if (this.quitting) return;
    this.quitting = true;
    await cancelAllJobs();
    await runExclusive(async () => {
      try {
        await shutdownExports();
        await closeAllNodes();
        await stopAllContexts();
      } catch (err) {
        log.error({ err: (err as Error).message }, 'error while closing nodes at exit');
      }
      await closeAllChardevs();
      if (this.pidfile) fs.rmSync(this.pidfile, { force: true });
    });
    process.exit(0);
  }
}

export function defaultRuntimeDir(): string {
  if (process.env.QBD_RUNTIME_DIR) return process.env.QBD_RUNTIME_DIR;
  if (process.getuid?.() === 0) return '/run/qbd';
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'qbd');
  return path.join(os.tmpdir(), `qbd-${process.getuid?.() ?? 'user'}`);
}
