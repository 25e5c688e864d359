import { describe, it, expect, beforeAll, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QmpClient } from '../../src/shell/qmp-client';
import { StorageDaemon, mustExecute, startStorageDaemon } from './support/qsd';
import { TerminalSession } from './support/tmux';
import { QBD_BIN, requireBuiltShell, requireTools, skipWithout } from './support/tools';

const PROMPT = /^\(QEMU\)$/;

describe.skipIf(skipWithout('qemu-storage-daemon', 'tmux'))('qbd shell in a terminal', () => {
  let qsd: StorageDaemon;
  let terminals: TerminalSession[] = [];
  let other: QmpClient | undefined;
  let historyFile: string;

  /** Starts the shell on monitor 0 and waits for its first prompt. */
  async function startShell(...extraArgs: string[]): Promise<TerminalSession> {
    const terminal = TerminalSession.start([process.execPath, QBD_BIN, 'shell', ...extraArgs, qsd.sockets[0]!], {
      QBD_SHELL_HISTORY: historyFile,
    });
    terminals.push(terminal);
    await terminal.waitFor((screen) => PROMPT.test(screen.split('\n').pop() ?? ''));
    return terminal;
  }

  /** A second QMP connection (monitor 1) to change things behind the shell's back. */
  async function otherClient(): Promise<QmpClient> {
    other ??= await qsd.connect(1);
    return other;
  }

  /** A backup job slow enough to watch: 64 MiB at 16 MiB/s. */
  async function startSlowBackup(jobId: string): Promise<void> {
    const client = await otherClient();
    await mustExecute(client, 'blockdev-add', { driver: 'null-co', 'node-name': `${jobId}-src`, size: 64 << 20 });
    await mustExecute(client, 'blockdev-add', { driver: 'null-co', 'node-name': `${jobId}-dst`, size: 64 << 20 });
    await mustExecute(client, 'blockdev-backup', {
      'job-id': jobId,
      device: `${jobId}-src`,
      target: `${jobId}-dst`,
      sync: 'full',
      speed: 16 << 20,
    });
  }

  beforeAll(() => {
    requireTools('qemu-storage-daemon', 'tmux');
    requireBuiltShell();
  });
  beforeEach(async () => {
    qsd = await startStorageDaemon();
    historyFile = path.join(qsd.dir, 'history');
  });
  afterEach(async () => {
    for (const terminal of terminals) terminal.kill();
    terminals = [];
    other?.close();
    other = undefined;
    await qsd.stop();
  });

  it('greets with the server version and shows the prompt', async () => {
    const shell = await startShell();
    expect(shell.screen()).toMatch(/Connected to QEMU \d+\.\d+\.\d+/);
  });

  it('completes command names', async () => {
    const shell = await startShell();
    shell.type('query-ver');
    shell.press('Tab');
    await shell.waitFor(/\(QEMU\) query-version$/);
    expect(shell.cursorColumn()).toBe('(QEMU) query-version '.length);
    shell.press('Enter');
    await shell.waitFor(/"return": \{"qemu": \{"micro"/);
  });

  it('completes argument names and enum values from the schema', async () => {
    const shell = await startShell();
    shell.type('blockdev-add dri');
    shell.press('Tab');
    await shell.waitFor(/blockdev-add driver=$/);
    shell.type('null-c');
    shell.press('Tab');
    await shell.waitFor(/blockdev-add driver=null-co$/);
    expect(shell.cursorColumn()).toBe('(QEMU) blockdev-add driver=null-co '.length);
    shell.type('node-n');
    shell.press('Tab');
    await shell.waitFor(/driver=null-co node-name=$/);
  });

  it('completes node names and job ids fetched from the server', async () => {
    await startSlowBackup('job0');
    const shell = await startShell();
    shell.type('blockdev-del node-name=job0-s');
    shell.press('Tab');
    await shell.waitFor(/blockdev-del node-name=job0-src$/);
    shell.press('C-u');
    shell.type('job-pause id=j');
    shell.press('Tab');
    await shell.waitFor(/job-pause id=job0$/);
    await mustExecute(await otherClient(), 'job-cancel', { id: 'job0' });
  });

  it('lists the candidates on a second Tab', async () => {
    const shell = await startShell();
    shell.type('blockdev-add driver=null-');
    shell.press('Tab');
    await shell.waitFor(/driver=null-$/);
    shell.press('Tab');
    await shell.waitFor(/driver=null-aio\s+driver=null-co/);
  });

  it('prints an event the moment it arrives and redraws the half-typed line', async () => {
    const shell = await startShell();
    shell.type('query-jo');
    await shell.waitFor(/\(QEMU\) query-jo$/);
    const image = path.join(qsd.dir, 'event.img');
    await mustExecute(await otherClient(), 'blockdev-create', {
      'job-id': 'create0',
      options: { driver: 'file', filename: image, size: 65536 },
    });
    const screen = await shell.waitFor(/"status": "concluded", "id": "create0"/);
    expect(screen.split('\n').pop()).toBe('(QEMU) query-jo');
    shell.type('bs');
    shell.press('Enter');
    await shell.waitFor(/\{"return": \[\{"current-progress": 1, "status": "concluded", "total-progress": 1, "type": "create", "id": "create0"\}\]\}/);
  });

  it('collects a transaction under the TRANS> prompt and sends it on )', async () => {
    const shell = await startShell();
    shell.type('blockdev-add driver=null-co node-name=disk0 size=1M');
    shell.press('Enter');
    await shell.waitFor(/\{"return": \{\}\}\n\(QEMU\)$/);
    shell.type('transaction(');
    shell.press('Enter');
    await shell.waitFor(/TRANS>$/);
    shell.type('block-dirty-bitmap-add node=disk0 name=b0');
    shell.press('Enter');
    await shell.waitFor(/name=b0\nTRANS>$/);
    shell.type(')');
    shell.press('Enter');
    await shell.waitFor(/TRANS> \)\n\{"return": \{\}\}\n\(QEMU\)$/);
    shell.type('query-named-block-nodes flat=true');
    shell.press('Enter');
    await shell.waitFor(/"name": "b0"/);
  });

  it('continues an open JSON value on the next line with a continuation prompt', async () => {
    const shell = await startShell();
    shell.type('{"execute": "query-jobs",');
    shell.press('Enter');
    await shell.waitFor(/\n\.\.\.$/);
    shell.type('"id": 42}');
    shell.press('Enter');
    await shell.waitFor(/\{"return": \[\], "id": 42\}\n\(QEMU\)$/);
  });

  it('keeps history across sessions in the history file', async () => {
    let shell = await startShell();
    shell.type('query-jobs');
    shell.press('Enter');
    await shell.waitFor(/\{"return": \[\]\}\n\(QEMU\)$/);
    shell.press('C-d');
    await eventuallyGone(shell);
    expect(fs.readFileSync(historyFile, 'utf8')).toBe('query-jobs\n');
    shell = await startShell();
    shell.press('Up');
    await shell.waitFor(/\(QEMU\) query-jobs$/);
  });

  it('throws away the typed line on Ctrl-C', async () => {
    const shell = await startShell();
    shell.type('transaction(');
    shell.press('Enter');
    await shell.waitFor(/TRANS>$/);
    shell.type('abort');
    shell.press('C-c');
    await shell.waitFor(/TRANS> abort\^C\n\(QEMU\)$/);
  });

  it('shows help for a command from the schema', async () => {
    const shell = await startShell();
    shell.type('help block-job-set-speed');
    shell.press('Enter');
    await shell.waitFor(/block-job-set-speed arguments:\n\s+device\s+str\s*\n\s+speed\s+int/);
  });

  it('shows running jobs with progress bars until a key is pressed', async () => {
    await startSlowBackup('backup0');
    const shell = await startShell();
    shell.type('jobs');
    shell.press('Enter');
    await shell.waitFor(/backup0\s+backup\s+running\s+\[#*\.*\]\s+\d+\.\d%\s+[\d.]+ MiB \/ 64\.0 MiB\s+[\d.]+ MiB\/s/);
    await shell.waitFor(/press any key to stop/);
    shell.type('x');
    const screen = await shell.waitFor(/Stopped watching; the jobs go on\.\n\(QEMU\)$/);
    expect(screen.split('\n').pop()).toBe('(QEMU)');
    await mustExecute(await otherClient(), 'job-cancel', { id: 'backup0' });
  });

  it('ends the job view by itself once the jobs finish', async () => {
    await startSlowBackup('backup1');
    const shell = await startShell();
    shell.type('watch-jobs');
    shell.press('Enter');
    await shell.waitFor(/backup1\s+backup\s+running/);
    await mustExecute(await otherClient(), 'block-job-set-speed', { device: 'backup1', speed: 0 });
    await shell.waitFor(/backup1\s+backup\s+dismissed\s+\[#{30}\]\s+100\.0%\s+64\.0 MiB \/ 64\.0 MiB\nNo job is running\./, 8000);
    await shell.waitFor(/"event": "BLOCK_JOB_COMPLETED"[^\n]*\n(.*\n)*\(QEMU\)$/);
  });
});

async function eventuallyGone(terminal: TerminalSession): Promise<void> {
  const deadline = Date.now() + 5000;
  while (terminal.alive()) {
    if (Date.now() > deadline) throw new Error('the shell did not exit');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
