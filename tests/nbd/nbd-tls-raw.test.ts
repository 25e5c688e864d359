/**
 * NBD over TLS byte by byte: a raw client starts TLS with the options qbd
 * builds from endpoint=client credentials (src/crypto/tls-options.ts) and
 * talks inside the session, to qbd and to the reference alike; plaintext
 * sent behind STARTTLS is dropped; the handshake timeout covers TLS.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, waitFor, type Flavour } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { clientTlsOptions } from '../../src/crypto/tls-options';
import { loadPsk, loadX509 } from '../../src/objects/tls-creds';
import * as path from 'node:path';
import { run, startNbdDaemon, type NbdDaemon } from './support/nbd-daemon';
import { makePki, type TestPki } from '../../bench/pki';
import { RawClient } from './support/raw-client';

const ready = toolAvailable('certtool') && toolAvailable('qemu-storage-daemon') && toolAvailable('nbdinfo');

const OPT_LIST = 3;
const OPT_STARTTLS = 5;

/** LIST's replies as text: what the session shows once TLS is up. */
async function list(c: RawClient): Promise<string[]> {
  c.sendOption(OPT_LIST);
  const out: string[] = [];
  for (;;) {
    const r = await c.optionReply();
    out.push(`${r.type.toString(16)}:${r.data.subarray(4).toString()}`);
    if (r.type !== 2) return out;
  }
}

describe.skipIf(!ready)('raw clients inside TLS sessions', () => {
  let root: string;
  let pki: TestPki;
  const x509 = {} as Record<Flavour, NbdDaemon>;
  const psk = {} as Record<Flavour, NbdDaemon>;
  let slow: NbdDaemon;
  let iothread: NbdDaemon;
  const noVerify = {} as Record<Flavour, NbdDaemon>;
  const plain = {} as Record<Flavour, NbdDaemon>;
  const badPriority = {} as Record<Flavour, NbdDaemon>;

  beforeAll(async () => {
    root = tempDir('qbd-tls-raw-');
    pki = makePki(root);
    const x509Opts = { before: ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server`], serverOptions: 'tls-creds=tls0' };
    const pskOpts = { before: ['--object', `tls-creds-psk,id=tls0,dir=${pki.pskServerDir},endpoint=server`], serverOptions: 'tls-creds=tls0' };
    const noVerifyOpts = {
      before: ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server,verify-peer=off`, '--object', 'authz-simple,id=authz0,identity=nobody'],
      serverOptions: 'tls-creds=tls0,tls-authz=authz0',
    };
    const badPriorityOpts = { before: ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server,priority=NORMAL:+BOGUS`], serverOptions: 'tls-creds=tls0' };
    [noVerify.qbd, noVerify.qsd, plain.qbd, plain.qsd, badPriority.qbd, badPriority.qsd] = await Promise.all([
      startNbdDaemon('qbd', noVerifyOpts),
      startNbdDaemon('qsd', noVerifyOpts),
      startNbdDaemon('qbd'),
      startNbdDaemon('qsd'),
      startNbdDaemon('qbd', badPriorityOpts),
      startNbdDaemon('qsd', badPriorityOpts),
    ]);
    [x509.qbd, x509.qsd, psk.qbd, psk.qsd, slow, iothread] = await Promise.all([
      startNbdDaemon('qbd', x509Opts),
      startNbdDaemon('qsd', x509Opts),
      startNbdDaemon('qbd', pskOpts),
      startNbdDaemon('qsd', pskOpts),
      startNbdDaemon('qbd', { ...x509Opts, env: { QBD_NBD_HANDSHAKE_TIMEOUT_MS: '300' } }),
      startNbdDaemon('qbd', {
        before: ['--object', 'iothread,id=io0', ...x509Opts.before],
        serverOptions: 'tls-creds=tls0',
        exports: ['type=nbd,id=e0,node-name=disk,name=disk,writable=on,iothread=io0,fixed-iothread=on'],
      }),
    ]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([...Object.values(x509), ...Object.values(psk), ...Object.values(noVerify), ...Object.values(plain), ...Object.values(badPriority), slow, iothread].map((d) => d?.stop()));
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  async function session(d: NbdDaemon, creds: 'x509' | 'psk', junk?: Buffer): Promise<RawClient> {
    const c = await RawClient.connect(d.socket);
    await c.start();
    const loaded = creds === 'x509' ? loadX509('c', { dir: pki.clientDir, endpoint: 'client' }) : loadPsk('c', { dir: pki.pskClientDir, endpoint: 'client', username: 'alice' });
    return c.startTls(clientTlsOptions(loaded, 'localhost'), junk);
  }

  it.each(['x509', 'psk'] as const)('negotiates inside a %s session built from endpoint=client credentials, as with the reference', async (creds) => {
    const daemons = creds === 'x509' ? x509 : psk;
    const results: Record<string, unknown> = {};
    for (const flavour of ['qsd', 'qbd'] as const) {
      const s = await session(daemons[flavour], creds);
      const listed = await list(s);
      // STARTTLS once more, inside the session.
      s.sendOption(OPT_STARTTLS);
      const again = await s.optionReply();
      s.sendOption(OPT_STARTTLS, Buffer.from('x'));
      const withPayload = await s.optionReply();
      results[flavour] = {
        listed,
        again: `${again.type.toString(16)}:${again.data.toString()}`,
        withPayload: `${withPayload.type.toString(16)}:${withPayload.data.toString()}`,
        // Still negotiating: LIST is answered.
        after: await list(s),
      };
      s.close();
    }
    expect(results.qbd).toEqual(results.qsd);
    expect(results.qbd).toEqual({ listed: ['2:disk', '1:'], again: '80000003:TLS already enabled', withPayload: "80000003:option 'starttls' has unexpected length", after: ['2:disk', '1:'] });
  });

  it('drops plaintext the client sent behind STARTTLS, and the session still starts', async () => {
    // Smuggled options in plaintext must never be read as if they came over TLS.
    const smuggled = Buffer.alloc(16);
    smuggled.writeBigUInt64BE(0x49484156454f5054n, 0);
    smuggled.writeUInt32BE(8, 8);
    const s = await session(x509.qbd, 'x509', smuggled);
    expect(await list(s)).toEqual(['2:disk', '1:']);
    s.close();
  });

  it('drops a client that acknowledges STARTTLS and then never starts TLS, when the handshake time is up', async () => {
    const c = await RawClient.connect(slow.socket);
    await c.start();
    c.sendOption(OPT_STARTTLS);
    expect((await c.optionReply()).type).toBe(1);
    expect(await c.waitClosed(10_000)).toBe(true);
    // The server goes on serving.
    const s = await session(slow, 'x509');
    expect(await list(s)).toEqual(['2:disk', '1:']);
    s.close();
  });

  it('serves a relayed session to an export in an iothread, and drops it when the export is deleted', async () => {
    fs.writeFileSync(iothread.image, Buffer.alloc(4096, 0x42), { flag: 'r+' });
    const s = await session(iothread, 'x509');
    const replies = await s.go('disk');
    expect(replies[replies.length - 1]!.type).toBe(1);
    s.request(0, 0, 4096, { handle: 7 });
    const r = await s.simpleReply(4096);
    expect(r).toMatchObject({ error: 0, handle: 7 });
    expect(r.data.equals(Buffer.alloc(4096, 0x42))).toBe(true);
    const qmp = await iothread.daemon.client();
    expect(await qmp.execute('block-export-del', { id: 'e0', mode: 'hard' })).toEqual({ return: {} });
    await qmp.waitEvent('BLOCK_EXPORT_DELETED');
    qmp.close();
    expect(await s.waitClosed(10_000)).toBe(true);
  });

  it('reads keys.psk at each handshake, as the reference does: a key added later lets its user in', async () => {
    const carolKey = 'c0ffee'.repeat(8);
    const carolFile = path.join(root, 'carol.psk');
    fs.writeFileSync(carolFile, `carol:${carolKey}\n`);
    const uri = (d: NbdDaemon) => `nbds+unix://carol@/disk?socket=${d.socket}&tls-psk-file=${carolFile}`;
    const admitted = (d: NbdDaemon) => run('nbdinfo', ['--size', uri(d)]).then(() => true, () => false);
    expect(await admitted(psk.qsd)).toBe(false);
    expect(await admitted(psk.qbd)).toBe(false);
    fs.appendFileSync(path.join(pki.pskServerDir, 'keys.psk'), `carol:${carolKey}\n`);
    expect(await admitted(psk.qsd)).toBe(true);
    expect(await admitted(psk.qbd)).toBe(true);
  });

  it('with verify-peer=off, asks no certificate and checks no tls-authz, as the reference', async () => {
    const uri = (d: NbdDaemon) => `nbds+unix:///disk?socket=${d.socket}&tls-certificates=${pki.noCertDir}`;
    const admitted = (d: NbdDaemon) => run('nbdinfo', ['--size', uri(d)]).then(() => true, () => false);
    expect(await admitted(noVerify.qsd)).toBe(true);
    expect(await admitted(noVerify.qbd)).toBe(true);
  });

  it.each([
    ['STARTTLS gets ERR_POLICY and negotiation goes on', Buffer.alloc(0)],
    ['STARTTLS with a payload gets ERR_INVALID and the connection ends', Buffer.from('x')],
  ])('without TLS credentials, %s, as in the reference', async (_what, data) => {
    const results: Record<string, unknown> = {};
    for (const flavour of ['qsd', 'qbd'] as const) {
      const c = await RawClient.connect(plain[flavour].socket);
      await c.start();
      c.sendOption(OPT_STARTTLS, data);
      const r = await c.optionReply();
      results[flavour] = { reply: `${r.type.toString(16)}:${r.data.toString()}`, closed: await c.waitClosed(data.length > 0 ? 5000 : 300) };
      c.close();
    }
    expect(results.qbd).toEqual(results.qsd);
  });

  it('accepts a priority string GnuTLS refuses when the object is made, and then fails every handshake, as the reference', async () => {
    const uri = (d: NbdDaemon) => `nbds+unix:///disk?socket=${d.socket}&tls-certificates=${pki.clientDir}`;
    const admitted = (d: NbdDaemon) => run('nbdinfo', ['--size', uri(d)]).then(() => true, () => false);
    expect(await admitted(badPriority.qsd)).toBe(false);
    expect(await admitted(badPriority.qbd)).toBe(false);
    await waitFor(() => badPriority.qbd.daemon.stderr().includes('Cannot set default TLS session priority NORMAL:+BOGUS'), 5000, 'the log line');
  });
});
