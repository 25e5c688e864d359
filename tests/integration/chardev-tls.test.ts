/**
 * A monitor on a TLS socket chardev, in qbd and in qemu-storage-daemon:
 * a client that completes the handshake (x509, or PSK) and passes the
 * authz object is greeted and served; one the authz object refuses, or
 * one without a certificate when peers are verified, is dropped without a
 * greeting, in both.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type Flavour } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { CLIENT_DN, makePki, type TestPki } from '../../bench/pki';

const ready = toolAvailable('qemu-storage-daemon') && toolAvailable('certtool');

let root: string;
let pki: TestPki;

const ALICE_KEY = () => fs.readFileSync(pki.pskFiles.alice, 'utf8').trim().split(':')[1]!;

type Outcome = { greeted: false } | { greeted: true; capabilities: unknown; filename: string };

/**
 * Connects over TLS and waits for the greeting or the end of the
 * connection; when greeted, asks the daemon's other monitor how it shows
 * the TLS chardev. (Commands over the TLS monitor are left out: the
 * reference answers none from Node's TLS client, though it does from
 * gnutls-cli.)
 */
async function talk(port: number, options: tls.ConnectionOptions, monitor: QmpTestClient): Promise<Outcome> {
  const sock = tls.connect({ host: '127.0.0.1', port, checkServerIdentity: () => undefined, ...options });
  sock.on('error', () => undefined);
  try {
    const greeting = await new Promise<any | undefined>((resolve) => {
      let text = '';
      sock.on('data', (d) => {
        text += d;
        if (text.includes('\r\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\r\n'))));
      });
      sock.on('close', () => resolve(undefined));
    });
    if (!greeting) return { greeted: false };
    const chardevs = (await monitor.execute('query-chardev')).return;
    const t0 = chardevs.find((c: { label: string }) => c.label === 't0');
    return { greeted: true, capabilities: greeting.QMP.capabilities, filename: t0.filename.replace(/\d+/g, 'N') };
  } finally {
    sock.destroy();
  }
}

async function outcome(flavour: Flavour, objects: string[], chardevOptions: string, client: tls.ConnectionOptions): Promise<Outcome> {
  const dir = tempDir(`qbd-chardev-tls-${flavour}-`);
  const daemon = await startDaemon(flavour, [...objects.flatMap((o) => ['--object', o]), '--chardev', `socket,id=t0,host=127.0.0.1,port=0,server=on,wait=off,${chardevOptions}`, '--monitor', 't0'], { dir });
  try {
    const c = await daemon.client();
    const addr = (await c.execute('qom-get', { path: '/chardevs/t0', property: 'addr' })).return;
    const result = await talk(Number(addr.port), client, c);
    c.close();
    return result;
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function both(objects: () => string[], chardevOptions: string, client: () => tls.ConnectionOptions): Promise<Outcome> {
  const [ours, theirs] = await Promise.all([outcome('qbd', objects(), chardevOptions, client()), outcome('qsd', objects(), chardevOptions, client())]);
  expect(ours).toEqual(theirs);
  return ours;
}

const ca = (): Buffer => fs.readFileSync(path.join(pki.serverDir, 'ca-cert.pem'));
const clientCert = (dir: string): tls.ConnectionOptions => ({
  ca: ca(),
  cert: fs.readFileSync(path.join(dir, 'client-cert.pem')),
  key: fs.readFileSync(path.join(dir, 'client-key.pem')),
});

describe.skipIf(!ready)('a monitor on a TLS socket chardev, against the reference', () => {
  beforeAll(() => {
    root = tempDir('qbd-chardev-tls-pki-');
    pki = makePki(root);
  }, 60_000);
  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('greets an x509 client when peers are not verified', async () => {
    const r = await both(() => [`tls-creds-x509,id=x0,dir=${pki.serverDir},endpoint=server,verify-peer=off`], 'tls-creds=x0', () => ({ ca: ca() }));
    expect(r).toEqual({ greeted: true, capabilities: ['oob'], filename: 'tcp:N.N.N.N:N,server=on <-> N.N.N.N:N' });
  }, 60_000);

  it('greets a verified client the authz object allows, and drops one it refuses', async () => {
    const objects = (identity: string) => () => [`tls-creds-x509,id=x0,dir=${pki.serverDir},endpoint=server`, JSON.stringify({ 'qom-type': 'authz-simple', id: 'a0', identity })];
    expect((await both(objects(CLIENT_DN), 'tls-creds=x0,tls-authz=a0', () => clientCert(pki.clientDir))).greeted).toBe(true);
    expect((await both(objects(CLIENT_DN), 'tls-creds=x0,tls-authz=a0', () => clientCert(pki.intruderDir))).greeted).toBe(false);
    expect((await both(objects(CLIENT_DN), 'tls-creds=x0', () => ({ ca: ca() }))).greeted).toBe(false);
  }, 120_000);

  it('serves commands over the TLS monitor (qbd)', async () => {
    const dir = tempDir('qbd-chardev-tls-serve-');
    const daemon = await startDaemon('qbd', ['--object', `tls-creds-x509,id=x0,dir=${pki.serverDir},endpoint=server,verify-peer=off`, '--chardev', 'socket,id=t0,host=127.0.0.1,port=0,server=on,wait=off,tls-creds=x0', '--monitor', 't0'], { dir });
    try {
      const c = await daemon.client();
      const port = Number((await c.execute('qom-get', { path: '/chardevs/t0', property: 'addr' })).return.port);
      c.close();
      const sock = tls.connect({ host: '127.0.0.1', port, ca: ca(), checkServerIdentity: () => undefined });
      let text = '';
      await new Promise<void>((resolve, reject) => {
        sock.on('data', (d) => {
          text += d;
          if (text.split('\r\n').length === 2) sock.write('{"execute":"qmp_capabilities"}\n{"execute":"query-chardev-backends"}\n');
          if (text.split('\r\n').length === 4) resolve();
        });
        sock.on('error', reject);
      });
      sock.destroy();
      const [, caps, backends] = text.split('\r\n').map((l) => (l ? JSON.parse(l) : undefined));
      expect(caps).toEqual({ return: {} });
      expect(backends.return.map((b: { name: string }) => b.name)).toContain('ringbuf');
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('connects a TLS client socket to a TLS server, checking its certificate (qbd)', async () => {
    const secured: tls.TLSSocket[] = [];
    const server = tls.createServer(
      { cert: fs.readFileSync(path.join(pki.serverDir, 'server-cert.pem')), key: fs.readFileSync(path.join(pki.serverDir, 'server-key.pem')) },
      (s) => secured.push(s),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = String((server.address() as { port: number }).port);
    const dir = tempDir('qbd-chardev-tls-client-');
    const daemon = await startDaemon('qbd', ['--object', `tls-creds-x509,id=xc,dir=${pki.clientDir}`, '--object', `tls-creds-x509,id=xs,dir=${pki.serverDir},endpoint=server`], { dir });
    try {
      const c = await daemon.client();
      const socket = (extra: Record<string, unknown>) => ({ type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port } }, server: false, ...extra } });
      expect((await c.execute('chardev-add', { id: 'c0', backend: socket({ 'tls-creds': 'xc' }) })).return).toEqual({});
      expect((await c.execute('qom-get', { path: '/chardevs/c0', property: 'connected' })).return).toBe(true);
      expect((await c.execute('chardev-add', { id: 'c1', backend: socket({ 'tls-creds': 'xs' }) })).error.desc).toBe(
        "Failed to add chardev 'c1': Expected TLS credentials for a client endpoint",
      );
      for (let i = 0; i < 500 && secured.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(secured).toHaveLength(1);
      c.close();
    } finally {
      for (const s of secured) s.destroy();
      server.close();
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('greets a PSK client with a key from keys.psk', async () => {
    const psk = (): tls.ConnectionOptions => ({ pskCallback: () => ({ identity: 'alice', psk: Buffer.from(ALICE_KEY(), 'hex') }), ciphers: 'PSK' });
    const r = await both(() => [`tls-creds-psk,id=p0,dir=${pki.pskServerDir},endpoint=server`], 'tls-creds=p0', psk);
    expect(r.greeted).toBe(true);
  }, 60_000);
});
