/**
 * A monitor named before the nodes and exports on the command line: the
 * daemon may accept its clients early, but greets and answers them only once
 * the whole command line is applied, as qemu-storage-daemon does (qbd
 * also holds its greeting until then).
 *
 * Start-up is held inside the `--blockdev` of an NBD client whose server is
 * a gate the test opens when it likes; meanwhile a QMP client has already
 * connected and sent its commands.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QBD, tempDir, waitFor, type Flavour } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { startNbdkit, type NbdServer } from '../nbd-client/support/servers';

const ready = toolAvailable('qemu-storage-daemon') && toolAvailable('nbdkit');

/** A UNIX server that holds each connection until `open()`, then relays it to `target`. */
class Gate {
  readonly server: net.Server;
  private held: net.Socket[] = [];
  private opened = false;
  constructor(
    readonly socketPath: string,
    private readonly target: string,
  ) {
    this.server = net.createServer((s) => (this.opened ? this.relay(s) : this.held.push(s)));
  }
  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.socketPath, resolve));
  }
  get waiting(): number {
    return this.held.length;
  }
  open(): void {
    this.opened = true;
    for (const s of this.held.splice(0)) this.relay(s);
  }
  private relay(s: net.Socket): void {
    const t = net.connect(this.target);
    s.pipe(t).pipe(s);
    s.on('error', () => t.destroy());
    t.on('error', () => s.destroy());
  }
  close(): void {
    this.server.close();
  }
}

interface EarlyRun {
  /** What the monitor sent while start-up was held. */
  beforeStartup: string;
  /** Every message after it, greeting first. */
  messages: Array<Record<string, any>>;
}

async function earlyClient(flavour: Flavour, nbdkit: NbdServer): Promise<EarlyRun> {
  const dir = tempDir('qbd-startup-');
  const qmp = path.join(dir, 'qmp.sock');
  const gate = new Gate(path.join(dir, 'gate.sock'), (nbdkit.address as { path: string }).path);
  await gate.listen();
  const args = [
    '--chardev', `socket,id=qmp0,path=${qmp},server=on,wait=off`,
    '--monitor', 'chardev=qmp0',
    '--blockdev', `driver=nbd,node-name=remote,server.type=unix,server.path=${gate.socketPath}`,
    '--nbd-server', `addr.type=unix,addr.path=${path.join(dir, 'nbd.sock')}`,
    '--export', 'type=nbd,id=e0,node-name=remote',
  ];
  const argv = flavour === 'qbd' ? [process.execPath, QBD, ...args] : ['qemu-storage-daemon', ...args];
  const proc: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
  try {
    await waitFor(() => gate.waiting > 0 && fs.existsSync(qmp), 15_000, `${flavour} to reach its --blockdev`);
    const sock = net.connect(qmp);
    let text = '';
    sock.on('data', (d) => (text += d.toString('utf8')));
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.write('{"execute":"qmp_capabilities"}\n{"execute":"query-block-exports"}\n{"execute":"query-named-block-nodes","arguments":{"flat":true}}\n');
    // Time for a daemon that answers early to do so.
    await new Promise((r) => setTimeout(r, 300));
    const beforeStartup = text;
    gate.open();
    await waitFor(() => text.split('\n').filter((l) => l.trim()).length >= 4, 15_000, `${flavour}'s replies`);
    sock.destroy();
    const messages = text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    return { beforeStartup, messages };
  } finally {
    proc.kill('SIGKILL');
    gate.close();
  }
}

describe.skipIf(!ready)('start-up ordering', () => {
  let nbdkit: NbdServer;
  const runs = new Map<Flavour, EarlyRun>();

  beforeAll(async () => {
    const dir = tempDir('qbd-startup-nbdkit-');
    nbdkit = await startNbdkit(['memory', 'size=1M'], { socket: path.join(dir, 'nbdkit.sock') });
    for (const flavour of ['qsd', 'qbd'] as const) runs.set(flavour, await earlyClient(flavour, nbdkit));
  }, 60_000);

  afterAll(async () => {
    await nbdkit?.stop();
  });

  // The reference may greet while its NBD client polls for the connection; it answers nothing.
  it.each(['qsd', 'qbd'] as const)('%s answers nothing until its command line is applied', (flavour) => {
    const early = runs.get(flavour)!.beforeStartup.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    expect(early.filter((m) => !('QMP' in m))).toEqual([]);
  });

  it.each(['qsd', 'qbd'] as const)('%s answers the early commands with the nodes and exports of the whole command line', (flavour) => {
    const [greeting, caps, exports, nodes] = runs.get(flavour)!.messages;
    expect(greeting).toHaveProperty('QMP');
    expect(caps).toEqual({ return: {} });
    expect(exports!.return).toEqual([{ type: 'nbd', id: 'e0', 'node-name': 'remote', 'shutting-down': false }]);
    expect(nodes!.return.map((n: { 'node-name': string }) => n['node-name'])).toContain('remote');
  });
});
