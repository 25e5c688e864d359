/**
 * The nbd client node over TLS: x509 (with a client certificate) and PSK,
 * against qbd's own TLS export, the reference's and qemu-nbd's. Data
 * written through the node is checked with `qemu-img compare` against a
 * model; a reconnect to a restarted server does the handshake again. The
 * refusals (wrong CA, wrong host name, no TLS on either side, server
 * credentials, PSK against a certificate server…) are the reference's,
 * compared reply by reply in the same QMP session.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise } from '../helpers/compare';
import { startDaemon, tempDir, type Flavour, type RunningDaemon } from '../helpers/daemons';
import { qmpSession } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';
import { run, startNbdDaemon, type NbdDaemon } from '../nbd/support/nbd-daemon';
import { makePki, type TestPki } from '../../bench/pki';
import { startClientDaemon, type ClientDaemon } from './support/client-daemon';
import { freePort, sparseFile, startQemuNbd, type NbdServer } from './support/servers';

const SIZE = 4 << 20;
const tools = ['certtool', 'qemu-io', 'qemu-img', 'qemu-nbd', 'qemu-storage-daemon'];
const ready = tools.every((t) => toolAvailable(t));

let pki: TestPki;
let root: string;

/** The client-side objects both daemons get. */
function clientObjects(): string[] {
  const dir = (d: string): string => path.join(root, d);
  return [
    ['tls-creds-x509', 'c0', pki.clientDir, ''],
    ['tls-creds-x509', 'wrongca', pki.wrongCaDir, ''],
    ['tls-creds-x509', 'nocert', pki.noCertDir, ''],
    ['tls-creds-x509', 'noverify', pki.clientDir, ',verify-peer=off'],
    ['tls-creds-x509', 'srv', pki.serverDir, ''],
    ['tls-creds-psk', 'psk', pki.pskClientDir, ',username=alice'],
    ['tls-creds-psk', 'pskbad', dir('psk-bad'), ',username=alice'],
  ].flatMap(([type, id, d, extra]) => ['--object', `${type},id=${id},dir=${d},endpoint=${id === 'srv' ? 'server' : 'client'}${extra}`]);
}

const x509Server = (): string[] => ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server`];
const pskServer = (): string[] => ['--object', `tls-creds-psk,id=tls0,dir=${pki.pskServerDir},endpoint=server`];

/** qemu-nbd with x509 credentials on 127.0.0.1 (the server certificate carries that address). */
function startTlsQemuNbd(image: string, port: number): Promise<NbdServer> {
  return startQemuNbd(image, { host: '127.0.0.1', port }, { exportName: 'disk', extra: [...x509Server(), '--tls-creds', 'tls0'] });
}

beforeAll(() => {
  if (!ready) return;
  root = tempDir('qbd-nbdc-tls-');
  pki = makePki(path.join(root, 'pki'));
  fs.mkdirSync(path.join(root, 'psk-bad'));
  // alice's name with bob's key.
  fs.writeFileSync(path.join(root, 'psk-bad', 'keys.psk'), `alice:${fs.readFileSync(pki.pskFiles.aliceWrongKey, 'latin1').split(':')[1]}`);
}, 60_000);

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const WRITES = ['write -P 0x5a 0 64k', 'write -P 0xa5 1000 3000', 'write -z 1M 512k', 'write -P 0x11 3M 1M', 'flush'];

/** Runs WRITES on the model and through `uri`, then checks model, server image and what the node reads are the same. */
async function writeAndCompare(uri: string, image: string, model: string): Promise<void> {
  const args = WRITES.flatMap((c) => ['-c', c]);
  await run('qemu-io', ['-f', 'raw', ...args, model], 60_000);
  const out = await run('qemu-io', ['-f', 'raw', ...args, uri], 60_000);
  expect(out).not.toMatch(/error|failed/i);
  await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, image]);
  await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, uri]);
}

describe.skipIf(!ready)('an nbd node with tls-creds reads and writes through TLS servers', () => {
  let qbd: ClientDaemon;
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    qbd = await startClientDaemon('qbd', clientObjects());
  }, 30_000);
  afterAll(async () => {
    await qbd?.stop();
    for (const stop of stops) await stop();
  });

  it.each<[string, Flavour, 'x509' | 'psk']>([
    ["qbd's x509 export", 'qbd', 'x509'],
    ["the reference's x509 export", 'qsd', 'x509'],
    ["qbd's PSK export", 'qbd', 'psk'],
    ["the reference's PSK export", 'qsd', 'psk'],
  ])('%s', async (_what, flavour, kind) => {
    const server: NbdDaemon = await startNbdDaemon(flavour, {
      size: SIZE,
      // The x509 server asks for a client certificate (verify-peer defaults to on): c0 shows one.
      before: kind === 'x509' ? x509Server() : pskServer(),
      serverOptions: 'tls-creds=tls0',
    });
    stops.push(() => server.stop());
    const node = `${flavour}-${kind}`;
    // A unix socket has no host name: the certificate is checked against tls-hostname.
    await qbd.qmp.cmd('blockdev-add', {
      driver: 'nbd', 'node-name': node, export: 'disk',
      server: { type: 'unix', path: server.socket },
      ...(kind === 'x509' ? { 'tls-creds': 'c0', 'tls-hostname': 'localhost' } : { 'tls-creds': 'psk' }),
    });
    const model = path.join(root, `${node}.model`);
    sparseFile(model, SIZE);
    await writeAndCompare(await qbd.reexport(node), server.image, model);
  }, 60_000);

  it('qemu-nbd --tls-creds on TCP: the host dialled is the name checked, and a reconnect does the handshake again', async () => {
    const image = path.join(root, 'qemu-nbd.raw');
    sparseFile(image, SIZE);
    const port = await freePort('127.0.0.1');
    let server = await startTlsQemuNbd(image, port);
    stops.push(() => server.stop());
    await qbd.qmp.cmd('blockdev-add', {
      driver: 'nbd', 'node-name': 'qnbd', export: 'disk', 'reconnect-delay': 30,
      server: { type: 'inet', host: '127.0.0.1', port: String(port) }, 'tls-creds': 'c0',
    });
    const uri = await qbd.reexport('qnbd');
    const model = path.join(root, 'qemu-nbd.model');
    sparseFile(model, SIZE);
    await writeAndCompare(uri, image, model);

    // The server goes away and comes back: the node's next requests go over a new TLS session.
    await server.stop();
    server = await startTlsQemuNbd(image, port);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 2M 64k', model], 60_000);
    const out = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 2M 64k', uri], 60_000);
    expect(out).not.toMatch(/error|failed/i);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, image]);
  }, 90_000);
});

/**
 * A server that refuses the client's certificate after the handshake hangs
 * up; whether the client's next write or read fails first, and whether it
 * sees an end or a reset, is a race, in the reference as in qbd. The error
 * says which; only its form is compared.
 */
function sameTlsChannelFailure(reply: unknown): unknown {
  const pattern = /Failed to (read option reply|send option request header): Cannot (read from|write to) TLS channel: (Input\/output error|Software caused connection abort)/;
  return JSON.parse(JSON.stringify(reply).replace(pattern, '$$TLS_CHANNEL_FAILURE'));
}

/** The same blockdev-add steps in one QMP session of `flavour`; replies with paths made neutral. */
async function session(flavour: Flavour, steps: string[], vars: Record<string, string>): Promise<unknown[]> {
  const { replies } = await qmpSession(flavour, steps, {
    prefix: 'qbd-nbdc-tls-',
    args: clientObjects(),
    vars,
    comparable: (reply) => sameTlsChannelFailure(normalise(reply, root)),
    replyTimeoutMs: 30_000,
  });
  return replies;
}

const add = (args: string): string => `{"execute":"blockdev-add","arguments":{"driver":"nbd","read-only":true,"export":"disk",${args}}}`;
const TCP = '"server":{"type":"inet","host":"127.0.0.1","port":"$PORT"}';
const TCP_LOCALHOST = '"server":{"type":"inet","host":"localhost","port":"$PORT"}';
const unix = (sock: string): string => `"server":{"type":"unix","path":"$SRV/${sock}"}`;

const STEPS = [
  add(`"node-name":"t0",${TCP},"tls-creds":"c0"`),
  add(`"node-name":"t1",${TCP_LOCALHOST},"tls-creds":"c0"`),
  add(`"node-name":"t2",${TCP},"tls-creds":"c0","tls-hostname":"example.org"`),
  add(`"node-name":"t3",${TCP},"tls-creds":"wrongca"`),
  add(`"node-name":"t4",${TCP},"tls-creds":"srv"`),
  add(`"node-name":"t5",${TCP}`),
  add(`"node-name":"t6",${TCP},"tls-creds":"nope"`),
  add(`"node-name":"t7",${unix('plain.sock')},"tls-creds":"c0"`),
  add(`"node-name":"t8",${unix('x509.sock')},"tls-creds":"c0"`),
  add(`"node-name":"t9",${unix('x509.sock')},"tls-creds":"c0","tls-hostname":"localhost"`),
  add(`"node-name":"t10",${unix('x509.sock')},"tls-creds":"noverify"`),
  add(`"node-name":"t11",${unix('verify.sock')},"tls-creds":"nocert","tls-hostname":"localhost"`),
  add(`"node-name":"t12",${unix('x509.sock')},"tls-creds":"psk"`),
  add(`"node-name":"t13",${unix('psk.sock')},"tls-creds":"psk"`),
  add(`"node-name":"t14",${unix('psk.sock')},"tls-creds":"pskbad"`),
  add(`"node-name":"t15",${unix('psk.sock')}`),
  add(`"node-name":"t16",${unix('x509.sock')},"tls-creds":"c0","tls-hostname":"localhost","export":"nope"`),
  add(`"node-name":"t17",${unix('nothing.sock')},"tls-creds":"c0"`),
  '{"execute":"query-named-block-nodes","arguments":{"flat":true}}',
];

describe.skipIf(!ready)('blockdev-add driver=nbd with TLS, compared with the reference', () => {
  const servers: Array<{ stop(): Promise<unknown> }> = [];
  let vars: Record<string, string>;

  beforeAll(async () => {
    const srv = path.join(root, 'srv');
    fs.mkdirSync(srv, { recursive: true });
    const image = path.join(srv, 'img.raw');
    sparseFile(image, SIZE);
    const port = await freePort('127.0.0.1');
    servers.push(await startTlsQemuNbd(image, port));
    const qsd = (name: string, objects: string[], creds: boolean): Promise<RunningDaemon> =>
      startDaemon('qsd', [
        ...objects,
        '--blockdev', `driver=file,filename=${image},node-name=f,read-only=on`,
        '--nbd-server', `addr.type=unix,addr.path=${path.join(srv, name)}${creds ? ',tls-creds=tls0' : ''}`,
        '--export', 'type=nbd,id=e0,node-name=f,name=disk',
      ], { dir: tempDir('qbd-nbdc-tls-srv-') });
    servers.push(
      await qsd('plain.sock', [], false),
      // verify-peer=off: a client without a certificate is let in.
      await qsd('x509.sock', ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server,verify-peer=off`], true),
      await qsd('verify.sock', x509Server(), true),
      await qsd('psk.sock', pskServer(), true),
    );
    vars = { $SRV: srv, $PORT: String(port) };
  }, 60_000);
  afterAll(async () => {
    for (const s of servers) await s.stop();
  });

  it('answers every step as the reference does', async () => {
    const ours = await session('qbd', STEPS, vars);
    const theirs = await session('qsd', STEPS, vars);
    for (let i = 0; i < STEPS.length; i++) expect({ step: STEPS[i], reply: ours[i] }).toEqual({ step: STEPS[i], reply: theirs[i] });
    // The steps that should succeed did: the comparison is not of two lists of errors.
    expect(JSON.stringify(ours[0])).toBe('{"return":{}}');
    expect(JSON.stringify(ours[9])).toBe('{"return":{}}');
    expect(JSON.stringify(ours[13])).toBe('{"return":{}}');
    expect(JSON.stringify(ours[11])).toContain('$TLS_CHANNEL_FAILURE');
    expect(JSON.stringify(ours[12])).toMatch(/handshake failed/);
  }, 120_000);
});
