/**
 * bin/qbd as a user runs it: monitors on every kind of character device,
 * several monitors and clients, and a connection that misbehaves.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QBD, startDaemon, tempDir, waitFor, type RunningDaemon } from '../helpers/daemons';
import { QmpTestClient } from '../helpers/qmp-client';

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

let daemon: RunningDaemon | undefined;
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
});

describe('QMP monitors', () => {
  it('greets, negotiates and answers on a UNIX socket', async () => {
    daemon = await startDaemon('qbd');
    const c = await daemon.connect();
    expect(c.greeting.QMP.capabilities).toEqual(['oob']);
    expect(c.greeting.QMP.version.qemu).toMatchObject({ major: 7, minor: 2 });
    await c.negotiate();
    expect(await c.execute('query-version', undefined, 'a')).toMatchObject({ id: 'a', return: { qemu: { major: 7 } } });
    c.close();
  });

  it('serves a TCP monitor and a WebSocket monitor beside the UNIX one', async () => {
    const [tcp, ws] = [await freePort(), await freePort()];
    daemon = await startDaemon('qbd', [
      '--chardev', `socket,id=tcp0,host=127.0.0.1,port=${tcp},server=on,wait=off`, '--monitor', 'chardev=tcp0',
      '--chardev', `socket,id=ws0,host=127.0.0.1,port=${ws},server=on,wait=off,websocket=on`, '--monitor', 'chardev=ws0',
    ]);
    const a = await QmpTestClient.tcp(tcp);
    const b = await QmpTestClient.websocket(`ws://127.0.0.1:${ws}/`);
    const u = await daemon.client();
    await a.negotiate();
    await b.negotiate();
    await a.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'seen-by-all' });
    for (const c of [a, b, u]) {
      const nodes = await c.cmd('query-named-block-nodes');
      expect(nodes.map((n: { 'node-name': string }) => n['node-name'])).toEqual(['seen-by-all']);
    }
    [a, b, u].forEach((c) => c.close());
  });

  it('answers on standard input and output with --chardev stdio', async () => {
    const proc = spawn(process.execPath, [QBD, '--chardev', 'stdio,id=s', '--monitor', 'chardev=s'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stdin.write('{"execute":"qmp_capabilities"}\n{"execute":"query-version","id":9}\n');
    await waitFor(() => out.split('\r\n').filter(Boolean).length >= 3, 10_000, 'stdio replies');
    const lines = out.split('\r\n').filter(Boolean).map((l) => JSON.parse(l));
    expect(lines[0].QMP).toBeDefined();
    expect(lines[1]).toEqual({ return: {} });
    expect(lines[2]).toMatchObject({ id: 9, return: { qemu: { major: 7 } } });
    proc.stdin.write('{"execute":"quit"}\n');
    const code = await new Promise((r) => proc.on('exit', r));
    expect(code).toBe(0);
  });

  it('serves clients one at a time on a socket, the next greeted when the first leaves', async () => {
    daemon = await startDaemon('qbd');
    const first = await daemon.client();
    let secondGreeted = false;
    const second = QmpTestClient.unix(daemon.qmpPath).then((c) => {
      secondGreeted = true;
      return c;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(secondGreeted).toBe(false);
    first.close();
    const c2 = await second;
    await c2.negotiate();
    expect((await c2.execute('query-version')).return).toBeDefined();
    c2.close();
    const third = await daemon.client();
    third.close();
  });

  it('keeps serving the same connection after malformed input', async () => {
    daemon = await startDaemon('qbd');
    const c = await daemon.client();
    c.sendRaw('garbage');
    expect((await c.next()).error.desc).toBe("JSON parse error, invalid keyword 'garbage'");
    c.sendRaw('{"execute": "query-version", ');
    c.sendRaw('"id": 5}');
    expect((await c.next()).id).toBe(5);
    c.sendRaw('{"execute":"query-version","id":1}{"execute":"query-version","id":2}');
    expect((await c.next()).id).toBe(1);
    expect((await c.next()).id).toBe(2);
    c.close();
  });

  it('finishes a command whose client disconnected, and serves the next client', async () => {
    daemon = await startDaemon('qbd');
    const c = await daemon.client();
    c.sendRaw(JSON.stringify({ execute: 'blockdev-add', arguments: { driver: 'null-co', 'node-name': 'orphan' } }));
    c.close();
    const d = await daemon.client();
    await waitFor(() => true);
    let names: string[] = [];
    for (let i = 0; i < 50 && !names.includes('orphan'); i++) {
      names = (await d.cmd('query-named-block-nodes')).map((n: { 'node-name': string }) => n['node-name']);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(names).toEqual(['orphan']);
    d.close();
  });

  it('echoes ids of any JSON type, on success and on error', async () => {
    daemon = await startDaemon('qbd');
    const c = await daemon.client();
    for (const id of [1, 'x', [1, { a: null }], { deep: { er: true } }, null, 2.5]) {
      expect((await c.execute('query-version', undefined, id)).id).toEqual(id);
      expect((await c.execute('no-such-command', undefined, id)).id).toEqual(id);
    }
    c.close();
  });
});

describe('the daemon process', () => {
  it('writes the pidfile once listening and removes it on SIGTERM, exiting 0', async () => {
    daemon = await startDaemon('qbd');
    expect(fs.readFileSync(daemon.pidfile, 'utf8')).toBe(`${daemon.proc.pid}\n`);
    expect(await daemon.stop()).toBe(0);
    expect(fs.existsSync(daemon.pidfile)).toBe(false);
    expect(fs.existsSync(daemon.qmpPath)).toBe(false);
    daemon = undefined;
  });

  for (const signal of ['SIGINT', 'SIGHUP'] as const) {
    it(`exits 0 on ${signal}, like quit`, async () => {
      daemon = await startDaemon('qbd', ['--blockdev', 'null-co,node-name=n0']);
      const exit = new Promise((r) => daemon!.proc.once('exit', r));
      daemon.proc.kill(signal);
      expect(await exit).toBe(0);
      daemon = undefined;
    });
  }

  it('replies to quit, then exits 0', async () => {
    daemon = await startDaemon('qbd');
    const c = await daemon.client();
    const exit = new Promise((r) => daemon!.proc.once('exit', r));
    expect(await c.execute('quit')).toEqual({ return: {} });
    expect(await exit).toBe(0);
    daemon = undefined;
  });

  it('daemonizes: the parent exits 0 once the child listens', async () => {
    const dir = tempDir();
    const pidfile = path.join(dir, 'qbd.pid');
    const sock = path.join(dir, 'qmp.sock');
    const parent = spawn(process.execPath, [QBD, '--daemonize', '--pidfile', pidfile, '--chardev', `socket,id=m,path=${sock},server=on,wait=off`, '--monitor', 'chardev=m'], { stdio: 'ignore' });
    expect(await new Promise((r) => parent.on('exit', r))).toBe(0);
    expect(fs.existsSync(sock)).toBe(true);
    const pid = Number(fs.readFileSync(pidfile, 'utf8'));
    expect(pid).not.toBe(parent.pid);
    const c = await QmpTestClient.unix(sock);
    await c.negotiate();
    await c.execute('quit');
    await waitFor(() => !fs.existsSync(pidfile), 5000, 'daemon exit');
  });

  it('daemonizes: the parent exits 1 with the child\'s error when start-up fails', async () => {
    const parent = spawn(process.execPath, [QBD, '--daemonize', '--blockdev', 'file,node-name=f,filename=/nonexistent/x'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    parent.stderr.on('data', (d) => (err += d));
    expect(await new Promise((r) => parent.on('exit', r))).toBe(1);
    expect(err).toMatch(/Could not open '\/nonexistent\/x': No such file or directory/);
  });

  it('prints one clear line and exits 1 for a bad option value', async () => {
    const proc = spawn(process.execPath, [QBD, '--blockdev', 'null-co,node-name=n,size=lots'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr.on('data', (d) => (err += d));
    expect(await new Promise((r) => proc.on('exit', r))).toBe(1);
    expect(err.trim().split('\n')[0]).toBe("qbd: --blockdev null-co,node-name=n,size=lots: Parameter 'size' expects integer");
  });

  it('opens a private monitor at the default path when given no arguments', async () => {
    const dir = tempDir();
    const runtime = path.join(dir, 'run');
    const proc = spawn(process.execPath, [QBD], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, QBD_RUNTIME_DIR: runtime } });
    let err = '';
    proc.stderr.on('data', (d) => (err += d));
    const sock = path.join(runtime, 'qmp.sock');
    await waitFor(() => err.includes('listening'), 10_000, 'start-up line');
    expect(err).toContain(`QMP monitor listening on ${sock}`);
    expect(fs.statSync(runtime).mode & 0o777).toBe(0o700);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const c = await QmpTestClient.unix(sock);
    await c.negotiate();
    await c.execute('quit');
    expect(await new Promise((r) => proc.on('exit', r))).toBe(0);
  });
});

describe('events', () => {
  it('reach every monitor that finished negotiation, in the same order, and no monitor that did not', async () => {
    const [tcp, silent] = [await freePort(), await freePort()];
    daemon = await startDaemon('qbd', [
      '--chardev', `socket,id=m1,host=127.0.0.1,port=${tcp},server=on,wait=off`, '--monitor', 'chardev=m1',
      '--chardev', `socket,id=m2,host=127.0.0.1,port=${silent},server=on,wait=off`, '--monitor', 'chardev=m2',
    ]);
    const a = await daemon.client();
    const b = await QmpTestClient.tcp(tcp);
    await b.negotiate();
    const notNegotiated = await QmpTestClient.tcp(silent);
    const file = path.join(daemon.dir, 'created.raw');
    await a.cmd('blockdev-create', { 'job-id': 'j1', options: { driver: 'file', filename: file, size: 1 << 20 } });
    for (const m of [a, b]) {
      const statuses: string[] = [];
      while (statuses[statuses.length - 1] !== 'concluded') statuses.push((await m.waitEvent('JOB_STATUS_CHANGE')).data.status);
      expect(statuses).toEqual(['created', 'running', 'waiting', 'pending', 'concluded']);
    }
    expect(fs.statSync(file).size).toBe(1 << 20);
    await a.cmd('job-dismiss', { id: 'j1' });
    expect((await b.waitEvent('JOB_STATUS_CHANGE')).data).toEqual({ id: 'j1', status: 'null' });
    expect(notNegotiated.events).toEqual([]);
    [a, b, notNegotiated].forEach((m) => m.close());
  });
});
