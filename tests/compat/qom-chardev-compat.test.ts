/**
 * The QOM tree and character devices over QMP, in the same session against
 * qbd and qemu-storage-daemon: qom-list, qom-get and qom-set on the root,
 * the containers, each kind of object and chardev (values, types, order,
 * errors to the letter), partial paths, chardev-add/change/remove with
 * their errors, query-chardev as clients come and go, and the ring buffer
 * commands. qom-list-types and query-chardev-backends must answer the
 * reference's lists restricted to what qbd implements, in the same order.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { makePki, type TestPki } from '../../bench/pki';

const ready = toolAvailable('qemu-storage-daemon') && toolAvailable('certtool');

let root: string;
let pki: TestPki;

type Step = string | { connect: string } | { disconnect: true };

const q = (execute: string, args?: Record<string, unknown>): string => JSON.stringify(args ? { execute, arguments: args } : { execute });
const get = (p: string, property: string): string => q('qom-get', { path: p, property });
const set = (p: string, property: string, value: unknown): string => q('qom-set', { path: p, property, value });
const add = (id: string, backend: Record<string, unknown>): string => q('chardev-add', { id, backend });
const unixSocket = (p: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  type: 'socket',
  data: { addr: { type: 'unix', data: { path: p } }, ...extra },
});

function commandLine(): string[] {
  return [
    '--object', 'iothread,id=io0,poll-max-ns=100',
    '--object', 'authz-simple,id=az,identity=bob',
    '--object', 'authz-list,id=al,policy=allow,rules.0.match=a*,rules.0.policy=deny,rules.0.format=glob,rules.1.match=b,rules.1.policy=allow',
    '--object', `tls-creds-x509,id=x0,dir=${pki.serverDir},endpoint=server`,
    '--object', `tls-creds-psk,id=p0,dir=${pki.pskServerDir},endpoint=server`,
    '--object', `tls-creds-psk,id=p1,dir=${pki.pskClientDir},username=alice`,
    '--chardev', 'ringbuf,id=rb,size=16',
    '--chardev', 'null,id=n0',
    '--chardev', 'memory,id=mem',
    '--chardev', 'file,id=f0,path=$DIR/f0.out',
    '--chardev', 'socket,id=m2,path=$DIR/m2.sock,server=on,wait=off',
    '--monitor', 'chardev=m2',
    '--chardev', 'socket,id=w0,path=$DIR/w0.sock,server=on,wait=off,websocket=on',
  ];
}

function steps(): Step[] {
  const properties: Array<[string, string[]]> = [
    ['/', ['type', 'objects', 'chardevs', 'nope']],
    ['/objects', ['type', 'io0', 'al', 'nope']],
    ['/objects/io0', ['type', 'thread-pool-min', 'aio-max-batch', 'thread-pool-max', 'poll-max-ns', 'poll-grow', 'poll-shrink']],
    ['/objects/az', ['identity']],
    ['/objects/al', ['policy', 'rules']],
    ['/objects/x0', ['endpoint', 'dir', 'verify-peer', 'priority', 'sanity-check', 'passwordid', 'loaded']],
    ['/objects/p0', ['endpoint', 'dir', 'verify-peer', 'priority', 'username', 'loaded']],
    ['/chardevs/m2', ['type', 'connected', 'addr']],
    ['/chardevs/w0', ['connected', 'addr']],
    ['/chardevs/rb', ['type', 'connected']],
  ];
  return [
    // The tree.
    ...['/', '/objects', '/chardevs', '/objects/io0', '/objects/al', '/objects/x0', '/objects/p0', '/chardevs/m2', '/chardevs/rb', '/chardevs/mem', '/chardevs/f0', '/chardevs/n0'].map((p) =>
      q('qom-list', { path: p }),
    ),
    // Partial and odd paths.
    ...['io0', 'objects', 'chardevs/m2', '', '/x', 'x', '/objects/', '//objects', '/objects/io0/', '/objects/io0/type', '/chardevs/m2/x'].map((p) => q('qom-list', { path: p })),
    get('io0', 'poll-max-ns'),
    get('', 'type'),
    get('/nope', 'type'),
    ...properties.flatMap(([p, props]) => props.map((prop) => get(p, prop))),
    // Writing.
    set('/objects/io0', 'poll-max-ns', 5),
    get('/objects/io0', 'poll-max-ns'),
    set('/objects/io0', 'poll-max-ns', -1),
    set('/objects/io0', 'poll-max-ns', '5'),
    set('/objects/io0', 'poll-max-ns', 1.5),
    set('/objects/io0', 'poll-max-ns', null),
    set('/objects/io0', 'poll-grow', 2),
    set('/objects/io0', 'aio-max-batch', 7),
    set('/objects/io0', 'thread-pool-max', 0),
    get('/objects/io0', 'thread-pool-max'),
    set('/objects/io0', 'thread-pool-max', 100),
    set('/objects/io0', 'thread-pool-min', -5),
    set('/objects/io0', 'type', 'x'),
    set('/objects/io0', 'nope', 'x'),
    set('/objects/az', 'identity', 'alice'),
    get('/objects/az', 'identity'),
    set('/objects/az', 'identity', 5),
    set('/objects/al', 'policy', 'deny'),
    set('/objects/al', 'policy', 'maybe'),
    set('/objects/al', 'rules', [{ match: 'x', policy: 'allow' }]),
    get('/objects/al', 'rules'),
    set('/objects/al', 'rules', [{ match: 'x' }]),
    set('/objects/al', 'rules', [{ match: 'x', policy: 'allow', extra: 1 }]),
    set('/objects/al', 'rules', { match: 'x' }),
    set('/objects/x0', 'priority', 'NORMAL'),
    get('/objects/x0', 'priority'),
    set('/objects/x0', 'verify-peer', 'yes'),
    set('/objects/x0', 'endpoint', 'nowhere'),
    set('/objects/x0', 'loaded', false),
    // A new endpoint applies to the next user.
    set('/objects/x0', 'endpoint', 'client'),
    q('nbd-server-start', { addr: { type: 'unix', data: { path: '$DIR/nbd.sock' } }, 'tls-creds': 'x0' }),
    set('/objects/x0', 'endpoint', 'server'),
    q('nbd-server-start', { addr: { type: 'unix', data: { path: '$DIR/nbd.sock' } }, 'tls-creds': 'x0' }),
    q('nbd-server-stop'),
    set('/chardevs/m2', 'connected', false),
    set('/objects', 'io0', 'x'),
    set('/nope', 'type', 'x'),
    q('object-add', { 'qom-type': 'iothread', id: 'io1', 'thread-pool-min': 10, 'thread-pool-max': 5 }),
    q('object-add', { 'qom-type': 'iothread', id: 'io1', 'thread-pool-max': 0 }),
    // Objects that fail to complete pass through /objects, which changes its order.
    ...['x5', 'x6', 'x7', 'x8', 'x9'].map((id) => q('object-add', { 'qom-type': 'tls-creds-x509', id, dir: '$DIR/nodir' })),
    q('object-add', { 'qom-type': 'tls-creds-psk', id: 'p9' }),
    q('object-add', { 'qom-type': 'tls-creds-psk', id: 'p9', loaded: true }),
    q('qom-list', { path: '/objects' }),
    q('object-add', { 'qom-type': 'authz-simple', id: 'a1', identity: 'x' }),
    q('object-del', { id: 'io0' }),
    q('qom-list', { path: '/objects' }),
    // Properties of types.
    ...['object', 'container', 'interface', 'user-creatable', 'event-loop-base', 'iothread', 'authz', 'authz-simple', 'authz-list', 'tls-creds', 'tls-creds-x509', 'tls-creds-psk', 'chardev', 'chardev-fd', 'chardev-socket', 'chardev-stdio', 'chardev-ringbuf', 'chardev-memory', 'chardev-null', 'chardev-file', 'nope'].map(
      (t) => q('qom-list-properties', { typename: t }),
    ),
    // Character devices.
    q('query-chardev'),
    q('ringbuf-write', { device: 'rb', data: 'hello' }),
    q('ringbuf-read', { device: 'rb', size: 3 }),
    q('ringbuf-read', { device: 'rb', size: 10 }),
    q('ringbuf-read', { device: 'rb', size: 10 }),
    q('ringbuf-write', { device: 'rb', data: '0123456789abcdefXYZ' }),
    q('ringbuf-read', { device: 'rb', size: 100 }),
    q('ringbuf-write', { device: 'rb', data: 'aGVsbG8=', format: 'base64' }),
    q('ringbuf-read', { device: 'rb', size: 100, format: 'base64' }),
    q('ringbuf-write', { device: 'rb', data: 'h\u00e9llo\u20ac' }),
    q('ringbuf-read', { device: 'rb', size: 2 }),
    q('ringbuf-read', { device: 'rb', size: 100 }),
    q('ringbuf-write', { device: 'rb', data: '//4AYQ==', format: 'base64' }),
    q('ringbuf-read', { device: 'rb', size: 100 }),
    q('ringbuf-write', { device: 'rb', data: 'YQ', format: 'base64' }),
    q('ringbuf-read', { device: 'rb', size: 100, format: 'base64' }),
    q('ringbuf-write', { device: 'rb', data: 'a=bc', format: 'base64' }),
    q('ringbuf-read', { device: 'rb', size: 100, format: 'base64' }),
    // Invalid UTF-8 read back as text: overlong, surrogate, noncharacter, beyond U+10FFFF, cut short, QEMU's C0 80.
    ...[[0xc1, 0x81, 0x41], [0xed, 0xa0, 0x80], [0xef, 0xbf, 0xbe], [0xf4, 0x90, 0x80, 0x80], [0x41, 0xe2, 0x82], [0xc0, 0x80, 0x42], [0xf0, 0x9f, 0x98, 0x80]].flatMap((bytes) => [
      q('ringbuf-write', { device: 'rb', data: Buffer.from(bytes).toString('base64'), format: 'base64' }),
      q('ringbuf-read', { device: 'rb', size: 16 }),
    ]),
    q('ringbuf-write', { device: 'rb', data: 'a\u0000b' }),
    q('ringbuf-read', { device: 'rb', size: 16, format: 'base64' }),
    q('ringbuf-write', { device: 'rb', data: '!!!notbase64', format: 'base64' }),
    q('ringbuf-read', { device: 'rb', size: 0 }),
    q('ringbuf-read', { device: 'rb', size: -1 }),
    q('ringbuf-write', { device: 'mem', data: 'abc' }),
    q('ringbuf-read', { device: 'mem', size: 10 }),
    q('ringbuf-write', { device: 'n0', data: 'abc' }),
    q('ringbuf-read', { device: 'n0', size: 1 }),
    q('ringbuf-write', { device: 'nope', data: 'abc' }),
    q('ringbuf-read', { device: 'nope', size: 1 }),
    q('chardev-send-break', { id: 'rb' }),
    q('chardev-send-break', { id: 'm2' }),
    q('chardev-send-break', { id: 'nope' }),
    q('chardev-remove', { id: 'm2' }),
    q('chardev-remove', { id: 'nope' }),
    q('chardev-remove', { id: 'n0' }),
    add('rb', { type: 'null', data: {} }),
    add('n0', { type: 'null', data: {} }),
    add('r2', { type: 'ringbuf', data: { size: 3 } }),
    add('r2', { type: 'ringbuf', data: { size: -4 } }),
    add('r2', { type: 'ringbuf', data: { size: 8 } }),
    add('r3', { type: 'memory', data: {} }),
    add('f1', { type: 'file', data: { out: '$DIR/f1.out' } }),
    add('f2', { type: 'file', data: { out: '$DIR/f2.out', in: '$DIR/f0.out', append: true } }),
    add('f3', { type: 'file', data: { out: '$DIR/nodir/f3.out' } }),
    add('f4', { type: 'file', data: { out: '$DIR/f4.out', in: '$DIR/nodir/x' } }),
    add('l1', { type: 'null', data: { logfile: '$DIR/nodir/log' } }),
    add('s3', unixSocket('$DIR/s3.sock', { server: true, wait: false })),
    add('s4', unixSocket('$DIR/s4.sock')),
    add('s5', unixSocket('$DIR/nodir/s5.sock', { server: true })),
    ...[{ 'tls-creds': 'nope' }, { 'tls-creds': 'p1' }, { 'tls-creds': 'az' }, { 'tls-authz': 'az' }].map((tlsOptions) =>
      add('t1', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, ...tlsOptions } }),
    ),
    add('t1', unixSocket('$DIR/t1.sock', { 'tls-creds': 'x0' })),
    add('t2', { type: 'socket', data: { addr: { type: 'inet', data: { host: '127.0.0.1', port: '0' } }, 'tls-creds': 'x0', 'tls-authz': 'nope' } }),
    add('st', { type: 'stdio', data: {} }),
    add('bad id', { type: 'null', data: {} }),
    q('query-chardev'),
    q('qom-list', { path: '/chardevs' }),
    get('/chardevs/s3', 'addr'),
    // A client comes and goes.
    { connect: '$DIR/s3.sock' },
    q('query-chardev'),
    get('/chardevs/s3', 'connected'),
    { disconnect: true },
    q('query-chardev'),
    // Client sockets: the test listens on peer.sock.
    add('c1', unixSocket('$DIR/peer.sock', { server: false })),
    get('/chardevs/c1', 'addr'),
    get('/chardevs/c1', 'connected'),
    add('c2', unixSocket('$DIR/none.sock', { server: false })),
    add('c3', unixSocket('$DIR/peer.sock', { server: false, wait: false })),
    add('c4', unixSocket('$DIR/peer.sock', { server: false, websocket: true })),
    q('query-chardev'),
    q('chardev-remove', { id: 'c1' }),
    add('c5', unixSocket('$DIR/peer.sock', { server: false })),
    // Change: refused with a monitor, else remove-then-add, which loses the chardev when the add fails.
    q('chardev-change', { id: 'm2', backend: { type: 'null', data: {} } }),
    q('chardev-change', { id: 'nope', backend: { type: 'null', data: {} } }),
    q('chardev-change', { id: 'rb', backend: { type: 'ringbuf', data: { size: 8 } } }),
    q('ringbuf-write', { device: 'rb', data: 'abc' }),
    q('chardev-change', { id: 'rb', backend: { type: 'memory', data: { size: 4 } } }),
    q('ringbuf-read', { device: 'rb', size: 8 }),
    get('/chardevs/rb', 'type'),
    q('chardev-change', { id: 'rb', backend: { type: 'ringbuf', data: { size: 3 } } }),
    q('chardev-change', { id: 'rb', backend: { type: 'null', data: {} } }),
    q('chardev-remove', { id: 's3' }),
    q('chardev-remove', { id: 'bad id' }),
    q('query-chardev'),
    q('qom-list', { path: '/chardevs' }),
    // Many names: the table grows, and shrinks again as most go.
    ...Array.from({ length: 40 }, (_, i) => add(`z${(i * 7919) % 100}`, { type: 'null', data: {} })),
    q('qom-list', { path: '/chardevs' }),
    ...Array.from({ length: 35 }, (_, i) => q('chardev-remove', { id: `z${(i * 7919) % 100}` })),
    q('qom-list', { path: '/chardevs' }),
    ...Array.from({ length: 10 }, (_, i) => add(`y.${i}`, { type: 'null', data: {} })),
    q('query-chardev'),
  ];
}

const PORT = /\b\d{4,5}\b/g;

/** Replies with paths, ports and the package string made comparable. */
function comparable(reply: Json, dir: string): Json {
  const walk = (v: Json): Json => {
    if (typeof v === 'string') return v.replace(PORT, 'PORT');
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(normalise(normalise(reply, dir), root));
}

async function session(flavour: 'qbd' | 'qsd'): Promise<Json[]> {
  const dir = tempDir(`qbd-qom-compat-${flavour}-`);
  let daemon: RunningDaemon | undefined;
  let client: net.Socket | undefined;
  // The server client sockets connect to; it keeps what it accepts.
  const peers: net.Socket[] = [];
  const peer = net.createServer((s) => peers.push(s));
  await new Promise<void>((resolve) => peer.listen(path.join(dir, 'peer.sock'), resolve));
  try {
    daemon = await startDaemon(flavour, commandLine().map((a) => a.split('$DIR').join(dir)), { dir });
    const c = await daemon.client();
    const replies: Json[] = [];
    for (const step of steps()) {
      if (typeof step === 'string') {
        c.sendRaw(step.split('$DIR').join(dir));
        replies.push(comparable(await c.next(), dir));
      } else if ('connect' in step) {
        const sock = net.createConnection(step.connect.split('$DIR').join(dir));
        client = sock;
        await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
        await waitUntilConnected(c, true);
      } else {
        client?.destroy();
        await waitUntilConnected(c, false);
      }
    }
    c.close();
    return replies;
  } finally {
    client?.destroy();
    await daemon?.stop();
    for (const s of peers) s.destroy();
    peer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Asks until the chardev reports the client's arrival or departure. */
async function waitUntilConnected(c: QmpTestClient, want: boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const r = await c.execute('qom-get', { path: '/chardevs/s3', property: 'connected' });
    if (r.return === want) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`s3 never became connected=${want}`);
}

/** One list-returning command in both, for comparisons of restricted lists. */
async function listSession(flavour: 'qbd' | 'qsd', commands: string[]): Promise<Json[]> {
  const daemon = await startDaemon(flavour, ['--object', 'iothread,id=io0']);
  try {
    const c = await daemon.client();
    const out: Json[] = [];
    for (const cmd of commands) {
      c.sendRaw(cmd);
      out.push((await c.next()).return);
    }
    c.close();
    return out;
  } finally {
    await daemon.stop();
    fs.rmSync(daemon.dir, { recursive: true, force: true });
  }
}

/** Polls until the chardev's `connected` is `want`; gives up after a bounded number of tries. */
async function until(c: QmpTestClient, id: string, want: boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if ((await c.execute('qom-get', { path: `/chardevs/${id}`, property: 'connected' })).return === want) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`${id} never became connected=${want}`);
}

/** A client socket with reconnect: made before its server exists, connecting once it does and again after losing it. */
async function reconnectSession(flavour: 'qbd' | 'qsd'): Promise<Json[]> {
  const daemon = await startDaemon(flavour);
  const dir = daemon.dir;
  const peerPath = path.join(dir, 'peer.sock');
  const accepted: net.Socket[] = [];
  let peer: net.Server | undefined;
  try {
    const c = await daemon.client();
    const seen: Json[] = [];
    const look = async (): Promise<void> => {
      const r1 = (await c.execute('query-chardev')).return.find((x: Json) => x.label === 'r1');
      seen.push(comparable(r1, dir));
    };
    seen.push(comparable(await c.execute('chardev-add', { id: 'r0', backend: unixSocket(peerPath, { server: true, reconnect: 1 }) }), dir));
    seen.push(comparable(await c.execute('chardev-add', { id: 'r1', backend: unixSocket(peerPath, { server: false, reconnect: 1 }) }), dir));
    await look();
    const server = net.createServer((s) => accepted.push(s));
    peer = server;
    await new Promise<void>((resolve) => server.listen(peerPath, resolve));
    await until(c, 'r1', true);
    await look();
    accepted[0]!.destroy();
    await until(c, 'r1', false);
    await look();
    await until(c, 'r1', true);
    await look();
    expect(accepted).toHaveLength(2);
    c.close();
    return seen;
  } finally {
    for (const s of accepted) s.destroy();
    peer?.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!ready)('QOM and character devices over QMP, against the reference', () => {
  beforeAll(() => {
    root = tempDir('qbd-qom-pki-');
    pki = makePki(root);
  }, 60_000);
  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('answers every step as the reference does, values included', async () => {
    const [ours, theirs] = await Promise.all([session('qbd'), session('qsd')]);
    if (process.env.DUMP) fs.writeFileSync(process.env.DUMP, JSON.stringify({ ours, theirs }, null, 1));
    const all = steps().filter((s): s is string => typeof s === 'string');
    const diffs = ours.flatMap((r, i) => structuralDiff(r, theirs[i], '$', true).map((d) => `step ${i} ${all[i]}: ${d}`));
    expect(diffs).toEqual([]);
    // The session reached the interesting replies.
    const text = JSON.stringify(theirs);
    expect(text).toContain("Chardev 'm2' is busy");
    expect(text).toContain('Chardev user does not support chardev hotswap');
    expect(text).toContain("Property 'iothread.type' is not writable");
    expect(text).toContain('unix:$DIR/s3.sock,server=on');
    expect(text).toContain("Failed to connect to '$DIR/none.sock': No such file or directory");
    expect(text).toContain('Expected TLS credentials for a server endpoint');
  }, 120_000);

  it('reconnects a client socket as the reference does', async () => {
    const [ours, theirs] = await Promise.all([reconnectSession('qbd'), reconnectSession('qsd')]);
    expect(ours).toEqual(theirs);
    expect(theirs.map((x: Json) => x.filename ?? x.error?.desc ?? 'ok')).toEqual([
      "Failed to add chardev 'r0': 'reconnect' option is incompatible with socket in server listen mode",
      'ok',
      'disconnected:unix:$DIR/peer.sock',
      'unix:',
      'disconnected:unix:$DIR/peer.sock',
      'unix:',
    ]);
  }, 60_000);

  it('lists the reference types and backends that qbd implements, in the reference order', async () => {
    const commands = [
      q('qom-list-types', { abstract: true }),
      q('qom-list-types'),
      q('qom-list-types', { implements: 'chardev' }),
      q('qom-list-types', { implements: 'chardev', abstract: true }),
      q('qom-list-types', { implements: 'authz', abstract: true }),
      q('qom-list-types', { implements: 'user-creatable' }),
      q('qom-list-types', { implements: 'interface', abstract: true }),
      q('qom-list-types', { implements: 'object' }),
      q('qom-list-types', { implements: 'tls-creds', abstract: false }),
      q('qom-list-types', { implements: 'nope' }),
      q('query-chardev-backends'),
    ];
    const [ours, theirs] = await Promise.all([listSession('qbd', commands), listSession('qsd', commands)]);
    const known = new Set([...(ours[0] as Json[]), ...(ours[10] as Json[])].map((t: Json) => t.name));
    expect(known.size).toBeGreaterThan(20);
    theirs.forEach((list: Json[], i) => {
      expect(ours[i], commands[i]).toEqual(list.filter((t) => known.has(t.name)));
    });
  }, 60_000);
});
