/**
 * NBD over TLS: qbd's server with tls-creds-x509 and tls-creds-psk, checked
 * with real clients (nbdinfo, nbdcopy, qemu-img, qemu-io) beside the
 * reference serving the same image with the same objects. Certificates are
 * made here with certtool.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, type Flavour } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { run, startNbdDaemon, type NbdDaemon } from './support/nbd-daemon';
import { CLIENT_DN, makePki, type TestPki } from '../../bench/pki';
import { RawClient } from './support/raw-client';

const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5 };
const NBD_REP_ERR_TLS_REQD = 0x80000005;
const NBD_REP_ERR_INVALID = 0x80000003;

const tools = ['certtool', 'nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io', 'qemu-storage-daemon'];
const ready = tools.every((t) => toolAvailable(t));

let pki: TestPki;
let pkiRoot: string;

/** Whether nbdinfo gets the export through `uri`. */
async function connects(uri: string): Promise<boolean> {
  try {
    const out = await run('nbdinfo', [uri]);
    return out.includes('with TLS');
  } catch {
    return false;
  }
}

function tlsUri(d: NbdDaemon, certDir: string): string {
  return `nbds+unix:///disk?socket=${d.socket}&tls-certificates=${certDir}`;
}

function pskUri(d: NbdDaemon, user: string, file: string): string {
  return `nbds+unix://${user}@/disk?socket=${d.socket}&tls-psk-file=${file}`;
}

/** The option replies a raw plaintext client gets, and whether the server then hangs up. */
async function plaintextOption(d: NbdDaemon, option: number, data = Buffer.alloc(0)): Promise<{ replies: string[]; closed: boolean }> {
  const c = await RawClient.connect(d.socket);
  try {
    await c.start();
    c.sendOption(option, data);
    const replies: string[] = [];
    try {
      const r = await c.optionReply();
      replies.push(`${r.option}:${r.type.toString(16)}:${r.data.toString()}`);
    } catch {
      // Closed without a reply.
    }
    return { replies, closed: await c.waitClosed(option === OPT.LIST ? 300 : 5000) };
  } finally {
    c.close();
  }
}

beforeAll(() => {
  if (!ready) return;
  pkiRoot = tempDir('qbd-pki-');
  pki = makePki(pkiRoot);
}, 60_000);

afterAll(() => {
  if (pkiRoot) fs.rmSync(pkiRoot, { recursive: true, force: true });
});

describe.skipIf(!ready)('x509: qbd and the reference refuse and admit the same clients', () => {
  const daemons = {} as Record<Flavour, NbdDaemon>;
  beforeAll(async () => {
    const opts = {
      before: ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server`, '--object', `authz-simple,id=authz0,identity=${CLIENT_DN.replace(/,/g, ',,')}`],
      serverOptions: 'tls-creds=tls0,tls-authz=authz0',
    };
    [daemons.qbd, daemons.qsd] = await Promise.all([startNbdDaemon('qbd', opts), startNbdDaemon('qsd', opts)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([daemons.qbd?.stop(), daemons.qsd?.stop()]);
  });

  it('admits the client whose certificate DN tls-authz allows', async () => {
    expect(await connects(tlsUri(daemons.qsd, pki.clientDir))).toBe(true);
    expect(await connects(tlsUri(daemons.qbd, pki.clientDir))).toBe(true);
  });

  it.each([
    ['a certificate tls-authz does not name', () => pki.intruderDir],
    ['a certificate from another CA', () => pki.wrongCaDir],
    ['no client certificate while verify-peer is on', () => pki.noCertDir],
  ])('refuses %s, and keeps serving', async (_what, dir) => {
    expect(await connects(tlsUri(daemons.qsd, dir()))).toBe(false);
    expect(await connects(tlsUri(daemons.qbd, dir()))).toBe(false);
    expect(await connects(tlsUri(daemons.qbd, pki.clientDir))).toBe(true);
  });

  it('refuses a client that does not start TLS', async () => {
    const plain = (d: NbdDaemon) => `nbd+unix:///disk?socket=${d.socket}`;
    const [a, b] = await Promise.all([run('nbdinfo', [plain(daemons.qbd)]).catch((e: Error) => e.message), run('nbdinfo', [plain(daemons.qsd)]).catch((e: Error) => e.message)]);
    expect(a.split(daemons.qbd.socket).join('$S')).toBe(b.split(daemons.qsd.socket).join('$S'));
    expect(a).toMatch(/failed/);
  });

  it.each([
    ['LIST gets ERR_TLS_REQD and negotiation goes on', OPT.LIST, Buffer.alloc(0)],
    ['ABORT gets ERR_TLS_REQD, then the server hangs up', OPT.ABORT, Buffer.alloc(0)],
    ['EXPORT_NAME ends the connection without a reply', OPT.EXPORT_NAME, Buffer.from('disk')],
    ['STARTTLS with a payload gets ERR_INVALID and the connection ends', OPT.STARTTLS, Buffer.from('x')],
  ])('before TLS, %s, as in the reference', async (_what, option, data) => {
    const [ours, theirs] = await Promise.all([plaintextOption(daemons.qbd, option, data), plaintextOption(daemons.qsd, option, data)]);
    expect(ours).toEqual(theirs);
  });

  it('goes on serving TLS clients after its credentials object is deleted, as the reference does', async () => {
    for (const d of [daemons.qsd, daemons.qbd]) {
      const c = await d.daemon.client();
      expect(await c.execute('object-del', { id: 'tls0' })).toEqual({ return: {} });
      c.close();
      expect(await connects(tlsUri(d, pki.clientDir))).toBe(true);
    }
  });

  it('sends the reference error texts before TLS', async () => {
    const r = await plaintextOption(daemons.qbd, OPT.LIST);
    expect(r).toEqual({ replies: [`${OPT.LIST}:${NBD_REP_ERR_TLS_REQD.toString(16)}:Option 0x3 not permitted before TLS`], closed: false });
    const s = await plaintextOption(daemons.qbd, OPT.STARTTLS, Buffer.from('x'));
    expect(s).toEqual({ replies: [`${OPT.STARTTLS}:${NBD_REP_ERR_INVALID.toString(16)}:option 'starttls' has unexpected length`], closed: true });
  });
});

// The export lives in an iothread: the session stays in the negotiating context and its plaintext is relayed there.
describe.skipIf(!ready)('data through TLS, to an export in an iothread', () => {
  let d: NbdDaemon;
  let source: string;
  const clientCreds = () => `tls-creds-x509,id=tls0,dir=${pki.clientDir},endpoint=client`;
  const imageOpts = () => `driver=nbd,server.type=unix,server.path=${d.socket},export=disk,tls-creds=tls0,tls-hostname=localhost`;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', {
      size: 8 << 20,
      before: ['--object', 'iothread,id=io0', '--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server`, '--object', `authz-list,id=authz0,policy=deny,rules.0.match=C=GB*CN=client.example.com,rules.0.policy=allow,rules.0.format=glob`],
      serverOptions: 'tls-creds=tls0,tls-authz=authz0',
      exports: ['type=nbd,id=e0,node-name=disk,name=disk,writable=on,iothread=io0,fixed-iothread=on'],
    });
    source = path.join(d.dir, 'source.bin');
    const data = crypto.randomBytes(8 << 20);
    data.fill(0, 2 << 20, 4 << 20);
    fs.writeFileSync(source, data);
  }, 30_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('nbdcopy writes a file through nbds:// and the image equals it', async () => {
    await run('nbdcopy', [source, tlsUri(d, pki.clientDir)], 60_000);
    await run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', source, d.image]);
  });

  it('qemu-io writes with tls-creds-x509 endpoint=client, and reads its pattern back', async () => {
    await run('qemu-io', ['--object', clientCreds(), '--image-opts', imageOpts(), '-c', 'write -P 0x5a 1M 128k']);
    const out = await run('qemu-io', ['--object', clientCreds(), '--image-opts', imageOpts(), '-c', 'read -P 0x5a 1M 128k']);
    expect(out).toMatch(/read 131072\/131072 bytes/);
    expect(out).not.toMatch(/Pattern verification failed/);
  });

  it('qemu-img reads the export through TLS into a copy equal to the image', async () => {
    const copy = path.join(d.dir, 'copy.raw');
    await run('qemu-img', ['convert', '--object', clientCreds(), '--image-opts', imageOpts(), '-O', 'raw', copy], 60_000);
    await run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', copy, d.image]);
  });

  it('nbdcopy reads the export through TLS into a copy equal to the image', async () => {
    const copy = path.join(d.dir, 'copy2.raw');
    await run('nbdcopy', [tlsUri(d, pki.clientDir), copy], 60_000);
    await run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', copy, d.image]);
  });

  it('refuses the client whose DN the glob rule does not match', async () => {
    expect(await connects(tlsUri(d, pki.intruderDir))).toBe(false);
    expect(await connects(tlsUri(d, pki.clientDir))).toBe(true);
  });
});

describe.skipIf(!ready)('PSK: qbd and the reference refuse and admit the same clients', () => {
  const daemons = {} as Record<Flavour, NbdDaemon>;
  beforeAll(async () => {
    const opts = {
      before: ['--object', `tls-creds-psk,id=tls0,dir=${pki.pskServerDir},endpoint=server`, '--object', 'authz-simple,id=authz0,identity=alice'],
      serverOptions: 'tls-creds=tls0,tls-authz=authz0',
    };
    [daemons.qbd, daemons.qsd] = await Promise.all([startNbdDaemon('qbd', opts), startNbdDaemon('qsd', opts)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([daemons.qbd?.stop(), daemons.qsd?.stop()]);
  });

  it.each([
    ['admits alice, whom tls-authz allows', 'alice', () => pki.pskFiles.alice, true],
    ['refuses alice with a wrong key', 'alice', () => pki.pskFiles.aliceWrongKey, false],
  ])('%s', async (_what, user, file, admitted) => {
    expect(await connects(pskUri(daemons.qsd, user, file()))).toBe(admitted);
    expect(await connects(pskUri(daemons.qbd, user, file()))).toBe(admitted);
  });

  it('refuses bob, whose key is right but whom tls-authz does not name (the reference lets him in)', async () => {
    // QEMU 7.2 checks tls-authz against x509 names only; qbd checks PSK usernames too.
    expect(await connects(pskUri(daemons.qsd, 'bob', pki.pskFiles.bob))).toBe(true);
    expect(await connects(pskUri(daemons.qbd, 'bob', pki.pskFiles.bob))).toBe(false);
    expect(await connects(pskUri(daemons.qbd, 'alice', pki.pskFiles.alice))).toBe(true);
  });

  it('serves qemu-io with tls-creds-psk endpoint=client', async () => {
    const creds = `tls-creds-psk,id=tls0,dir=${pki.pskClientDir},endpoint=client,username=alice`;
    const opts = `driver=nbd,server.type=unix,server.path=${daemons.qbd.socket},export=disk,tls-creds=tls0,tls-hostname=localhost`;
    await run('qemu-io', ['--object', creds, '--image-opts', opts, '-c', 'write -P 0x33 0 64k']);
    const out = await run('qemu-io', ['--object', creds, '--image-opts', opts, '-c', 'read -P 0x33 0 64k']);
    expect(out).not.toMatch(/Pattern verification failed/);
    expect(fs.readFileSync(daemons.qbd.image).subarray(0, 65536).equals(Buffer.alloc(65536, 0x33))).toBe(true);
  });
});
