/**
 * Character devices doing their job in qbd: a ring buffer keeps the newest
 * bytes, a file chardev writes its monitor's output to a file, a socket
 * added over QMP accepts a client and lets it go when removed, a logfile
 * records what a monitor says, and removing a chardev takes it out of the
 * QOM tree.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { QBD, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import type { QmpTestClient } from '../helpers/qmp-client';

let daemon: RunningDaemon | undefined;

afterEach(async () => {
  await daemon?.stop();
  if (daemon) fs.rmSync(daemon.dir, { recursive: true, force: true });
  daemon = undefined;
});

async function start(extra: (dir: string) => string[] = () => []): Promise<QmpTestClient> {
  const dir = tempDir('qbd-chardev-');
  daemon = await startDaemon('qbd', extra(dir), { dir });
  return daemon.client();
}

async function ok(c: QmpTestClient, command: string, args?: Record<string, unknown>): Promise<any> {
  const r = await c.execute(command, args);
  expect(r.error, `${command} ${JSON.stringify(args)}`).toBeUndefined();
  return r.return;
}

async function chardevIds(c: QmpTestClient): Promise<string[]> {
  return ((await ok(c, 'query-chardev')) as Array<{ label: string }>).map((i) => i.label).sort();
}

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('--chardev help, against the reference', () => {
  it("lists the reference's backends that qbd implements, in its order, and exits 0", () => {
    const lines = (argv: string[]): string[] => execFileSync(argv[0]!, [...argv.slice(1), '--chardev', 'help'], { encoding: 'utf8' }).split('\n');
    const ours = lines([process.execPath, QBD]);
    const theirs = lines(['qemu-storage-daemon']);
    expect(ours[0]).toBe('Available chardev backend types: ');
    expect(ours).toEqual(theirs.filter((l, i) => i === 0 || l === '' || ours.includes(l)));
    expect(ours).toHaveLength(8);
  });
});

describe('character devices', () => {
  it('round-trips bytes through a ring buffer, keeping the newest when it overflows', async () => {
    const c = await start();
    await ok(c, 'chardev-add', { id: 'rb', backend: { type: 'ringbuf', data: { size: 8 } } });
    const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80, 0x7f]);
    await ok(c, 'ringbuf-write', { device: 'rb', data: binary.toString('base64'), format: 'base64' });
    expect(Buffer.from(await ok(c, 'ringbuf-read', { device: 'rb', size: 100, format: 'base64' }), 'base64')).toEqual(binary);
    await ok(c, 'ringbuf-write', { device: 'rb', data: 'abcdefghijkl' });
    expect(await ok(c, 'ringbuf-read', { device: 'rb', size: 3 })).toBe('efg');
    expect(await ok(c, 'ringbuf-read', { device: 'rb', size: 100 })).toBe('hijkl');
    expect(await ok(c, 'ringbuf-read', { device: 'rb', size: 100 })).toBe('');
    await ok(c, 'ringbuf-write', { device: 'rb', data: 'żółw' });
    expect(await ok(c, 'ringbuf-read', { device: 'rb', size: 100 })).toBe('żółw');
  });

  it('writes what a monitor on a file chardev says to the file, and appends when asked', async () => {
    let out = '';
    let appended = '';
    const c = await start((dir) => {
      out = path.join(dir, 'monitor.out');
      appended = path.join(dir, 'appended.out');
      fs.writeFileSync(appended, 'before\n');
      return ['--chardev', `file,id=f0,path=${out}`, '--monitor', 'chardev=f0', '--chardev', `file,id=f1,path=${appended},append=on`, '--monitor', 'f1'];
    });
    // The monitors have greeted by the time another monitor's command is answered.
    await ok(c, 'query-version');
    expect(JSON.parse(fs.readFileSync(out, 'utf8').split('\r\n')[0]!).QMP.capabilities).toEqual(['oob']);
    const kept = fs.readFileSync(appended, 'utf8');
    expect(kept.startsWith('before\n')).toBe(true);
    expect(JSON.parse(kept.slice('before\n'.length).split('\r\n')[0]!).QMP).toBeDefined();
    // chardev-add creates (or truncates) its output file at once.
    const added = path.join(daemon!.dir, 'added.out');
    fs.writeFileSync(added, 'old contents');
    await ok(c, 'chardev-add', { id: 'f2', backend: { type: 'file', data: { out: added } } });
    expect(fs.readFileSync(added, 'utf8')).toBe('');
  });

  it('keeps a monitor answering when its logfile cannot grow', async () => {
    const dir = tempDir('qbd-chardev-full-');
    const log = path.join(dir, 'm1.log');
    const sock = path.join(dir, 'm1.sock');
    daemon = await startDaemon('qbd', ['--chardev', `socket,id=m1,path=${sock},server=on,wait=off,logfile=${log}`, '--monitor', 'm1'], { dir, fileSizeLimitKiB: 1 });
    const { QmpTestClient } = await import('../helpers/qmp-client');
    const m1 = await QmpTestClient.unix(sock);
    await m1.negotiate();
    // Each reply is a few hundred bytes: the log reaches its limit after a few.
    for (let i = 0; i < 20; i++) expect((await m1.execute('query-chardev-backends')).return).toHaveLength(6);
    m1.close();
    expect(fs.statSync(log).size).toBe(1024);
  });

  it('accepts a client on a socket added over QMP and lets it go when the chardev is removed', async () => {
    const c = await start();
    const sock = path.join(daemon!.dir, 'added.sock');
    await ok(c, 'chardev-add', { id: 's0', backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: sock } } } } });
    expect(await ok(c, 'qom-get', { path: '/chardevs/s0', property: 'connected' })).toBe(false);
    const client = net.createConnection(sock);
    await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.resume();
    let info: Array<{ label: string; filename: string }> = [];
    for (let i = 0; i < 500 && !info.some((x) => x.label === 's0' && x.filename === `unix:${sock},server=on`); i++) {
      info = await ok(c, 'query-chardev');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(info.find((x) => x.label === 's0')?.filename).toBe(`unix:${sock},server=on`);
    expect(await ok(c, 'qom-get', { path: '/chardevs/s0', property: 'connected' })).toBe(true);
    await ok(c, 'chardev-remove', { id: 's0' });
    await closed;
    expect(fs.existsSync(sock)).toBe(false);
    expect(await chardevIds(c)).toEqual(['qmp0']);
  });

  it('keeps a monitor chardev while it is in use, and removes others from the QOM tree', async () => {
    const c = await start();
    await ok(c, 'chardev-add', { id: 'n0', backend: { type: 'null', data: {} } });
    expect((await ok(c, 'qom-list', { path: '/chardevs' })).map((p: { name: string }) => p.name)).toContain('n0');
    expect((await c.execute('chardev-remove', { id: 'qmp0' })).error.desc).toBe("Chardev 'qmp0' is busy");
    await ok(c, 'chardev-remove', { id: 'n0' });
    expect((await ok(c, 'qom-list', { path: '/chardevs' })).map((p: { name: string }) => p.name)).toEqual(['type', 'qmp0']);
    expect((await c.execute('qom-list', { path: '/chardevs/n0' })).error.class).toBe('DeviceNotFound');
    // The monitor still answers.
    expect(await chardevIds(c)).toEqual(['qmp0']);
  });

  it('runs a monitor on a client socket, connected to a server the test runs', async () => {
    const dir = tempDir('qbd-chardev-peer-');
    const sockPath = path.join(dir, 'peer.sock');
    const accepted = new Promise<net.Socket>((resolve) => {
      const server = net.createServer((s) => {
        server.close();
        resolve(s);
      });
      server.listen(sockPath);
    });
    try {
      const c = await start(() => ['--chardev', `socket,id=c0,path=${sockPath}`, '--monitor', 'c0']);
      const s = await accepted;
      let text = '';
      const lines = async (n: number): Promise<any[]> => {
        while (text.split('\r\n').length <= n) await new Promise<void>((resolve) => s.once('data', (d) => ((text += d), resolve())));
        return text.split('\r\n').slice(0, n).map((l) => JSON.parse(l));
      };
      expect((await lines(1))[0].QMP.capabilities).toEqual(['oob']);
      s.write('{"execute":"qmp_capabilities"}\n{"execute":"query-chardev"}\n');
      const [, caps, chardevs] = await lines(3);
      expect(caps).toEqual({ return: {} });
      expect(chardevs.return.find((x: { label: string }) => x.label === 'c0')).toEqual({ 'frontend-open': true, filename: 'unix:', label: 'c0' });
      expect(await ok(c, 'qom-get', { path: '/chardevs/c0', property: 'addr' })).toEqual({ type: 'unix', path: sockPath });
      s.destroy();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('copies what a monitor says into its logfile', async () => {
    let log = '';
    const c = await start((dir) => {
      log = path.join(dir, 'm1.log');
      return ['--chardev', `socket,id=m1,path=${path.join(dir, 'm1.sock')},server=on,wait=off,logfile=${log}`, '--monitor', 'm1'];
    });
    const { QmpTestClient } = await import('../helpers/qmp-client');
    const m1 = await QmpTestClient.unix(path.join(daemon!.dir, 'm1.sock'));
    await m1.negotiate();
    await m1.execute('query-chardev-backends');
    m1.close();
    await ok(c, 'query-version');
    const lines = fs.readFileSync(log, 'utf8').split('\r\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(lines[0].QMP).toBeDefined();
    expect(lines[1]).toEqual({ return: {} });
    expect(lines[2].return.map((b: { name: string }) => b.name)).toEqual(['null', 'ringbuf', 'stdio', 'socket', 'file', 'memory']);
  });

  it('puts the greeting of a monitor on a ring buffer into the ring, without out-of-band execution', async () => {
    const c = await start(() => ['--chardev', 'ringbuf,id=rb', '--monitor', 'rb']);
    const text: string = await ok(c, 'ringbuf-read', { device: 'rb', size: 4096 });
    expect(text.endsWith('\r\n')).toBe(true);
    expect(JSON.parse(text).QMP.capabilities).toEqual([]);
  });
});
