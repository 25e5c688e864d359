/**
 * Internal qcow2 snapshots over QMP (blockdev-snapshot-internal-sync,
 * blockdev-snapshot-delete-internal-sync, the transaction action): the same
 * replies and errors as qemu-storage-daemon, the same image afterwards as
 * `qemu-img check` and `qemu-img snapshot -l` see it; data written after a
 * snapshot leaves the snapshot's content alone, and deleting snapshots
 * gives their clusters back.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir, type DaemonLimits, type RunningDaemon } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { check, qemuImg, qemuIo } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-internal-snapshots-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const img = (name: string): string => path.join(dir, name);
const file = (name: string): Json => ({ driver: 'file', filename: img(name) });

/** Times differ from run to run; everything else must not. */
const TIME_KEYS = new Set(['date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec', 'actual-size', 'timestamp']);
function maskTimes(v: Json): Json {
  if (Array.isArray(v)) return v.map(maskTimes);
  if (v && typeof v === 'object') {
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) out[k] = TIME_KEYS.has(k) ? typeof x : maskTimes(x);
    return out;
  }
  return v;
}

/**
 * Replies as they come, errors included. Of query-named-block-nodes only
 * the qcow2 nodes count: how long a file is while the image grows is the
 * file's business, and a raw node over a qcow2 one is named differently.
 */
async function transcript(c: QmpTestClient, cmds: Array<[string, Json?]>): Promise<Json[]> {
  const out: Json[] = [];
  for (const [name, args] of cmds) {
    const r = await c.execute(name, args);
    const value = name === 'query-named-block-nodes' && r.return ? r.return.filter((n: Json) => n.drv === 'qcow2') : (r.error ?? r.return);
    out.push({ [name]: value });
  }
  return out;
}

/** Runs `steps` on a fresh daemon of each flavour, with the images `setup` makes anew before each; `after` looks at the images once the daemon is gone. */
async function both(
  setup: () => void,
  steps: (c: QmpTestClient, d: RunningDaemon) => Promise<Json>,
  after: () => Json = () => null,
  limits: DaemonLimits = {},
): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    setup();
    const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-isnap-${flavour}-`), ...limits });
    let result: Json;
    try {
      const c = await d.client();
      result = await steps(c, d);
    } finally {
      await d.stop();
    }
    out.push(normalise(maskTimes({ result, after: after() }), dir));
  }
  return { ours: out[0], theirs: out[1] };
}

function qcow2(name: string, size = '1M', ...extra: string[]): void {
  fs.rmSync(img(name), { force: true });
  qemuImg('create', '-f', 'qcow2', ...extra, img(name), size);
}

/** What qemu-img reads of an image: its snapshots (ids, names, sizes) and its check report. */
function imageFacts(name: string): Json {
  const info = JSON.parse(qemuImg('info', '--output=json', img(name)));
  const report = check(img(name));
  return { snapshots: info.snapshots ?? [], check: { status: report.status, ...report.report } };
}

function nbdIo(socket: string, exportName: string, ...cmds: string[]): string {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  return execFileSync('qemu-io', [...args, `nbd+unix:///${exportName}?socket=${socket}`], { encoding: 'utf8' });
}

/** A raw model file of `size` bytes shaped by qemu-io commands. */
function model(name: string, size: number, ...cmds: string[]): string {
  const p = img(name);
  fs.writeFileSync(p, Buffer.alloc(size));
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  execFileSync('qemu-io', [...args, p]);
  return p;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The guest data of snapshot `snap` of `image`. */
function contentOf(image: string, snap: string): Buffer {
  const out = img(`content-${process.hrtime.bigint()}.raw`);
  qemuImg('convert', '-f', 'qcow2', '-l', `snapshot.name=${snap}`, '-O', 'raw', image, out);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

/** Asserts the guest data of snapshot `snap` of `image` (the active layer when undefined) equals the raw `expected`. */
function expectContent(image: string, snap: string | undefined, expected: string): void {
  const out = img(`content-${process.hrtime.bigint()}.raw`);
  const opts = snap === undefined ? [] : ['-l', `snapshot.name=${snap}`];
  qemuImg('convert', '-f', 'qcow2', ...opts, '-O', 'raw', image, out);
  try {
    execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', out, expected], { encoding: 'utf8' });
  } catch (err) {
    throw new Error(`content of ${snap ?? 'the active layer'} differs: ${(err as { stdout?: string }).stdout ?? err}`);
  }
  fs.rmSync(out);
}

describe.skipIf(!haveTools)('internal snapshots, beside qemu-storage-daemon', () => {
  it('answers the snapshot commands, errors included, as the reference does, and leaves the same image', async () => {
    const setup = (): void => {
      qcow2('a.qcow2');
      qemuIo(img('a.qcow2'), 'write -P 1 0 128k');
      qcow2('ro.qcow2');
      qemuImg('snapshot', '-c', 'x', img('ro.qcow2'));
      qcow2('under.qcow2');
      fs.writeFileSync(img('r.raw'), Buffer.alloc(1 << 20));
    };
    const { ours, theirs } = await both(
      setup,
      async (c) => {
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: file('a.qcow2') });
        await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { ...file('r.raw'), 'node-name': 'rf' } });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'ro', 'read-only': true, file: file('ro.qcow2') });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'under', file: file('under.qcow2') });
        await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'over', file: 'under' });
        const take = (device: string, name: string): [string, Json] => ['blockdev-snapshot-internal-sync', { device, name }];
        const del = (device: string, args: Json): [string, Json] => ['blockdev-snapshot-delete-internal-sync', { device, ...args }];
        const replies = await transcript(c, [
          take('nope', 's'),
          take('r', 's'),
          take('rf', 's'),
          take('ro', 's'),
          take('under', 's'),
          take('a', 's'),
          take('a', 's'),
          take('a', ''),
          take('a', '1'),
          take('a', 'third'),
          take('over', 'through-raw'),
          ['query-named-block-nodes'],
          del('a', {}),
          del('a', { name: 'zz' }),
          del('a', { id: '99' }),
          del('a', { id: '1', name: 'zz' }),
          del('nope', { name: 's' }),
          del('r', { name: 's' }),
          del('ro', { name: 'nothing' }),
          del('ro', { name: 'x' }),
          del('a', { id: '1' }),
          del('a', { name: '1', id: '3' }),
          del('a', { name: 'third' }),
          take('a', 'after-delete'),
          del('over', { id: '1' }),
        ]);
        return replies;
      },
      () => ({ a: imageFacts('a.qcow2'), ro: imageFacts('ro.qcow2'), under: imageFacts('under.qcow2') }),
    );
    expect(JSON.stringify(ours)).toContain('after-delete');
    expect(ours.after.a.check.status).toBe(0);
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('takes snapshots in a transaction, undoes them when a later action fails, and refuses grouped completion', async () => {
    const setup = (): void => {
      qcow2('t1.qcow2');
      qcow2('t2.qcow2');
      qemuIo(img('t2.qcow2'), 'write -P 7 64k 64k');
    };
    const take = (device: string, name: string): Json => ({ type: 'blockdev-snapshot-internal-sync', data: { device, name } });
    const { ours, theirs } = await both(
      setup,
      async (c) => {
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 't1', file: file('t1.qcow2') });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 't2', file: file('t2.qcow2') });
        const replies = await transcript(c, [
          ['transaction', { actions: [take('t1', 'gone'), take('t2', 'gone'), { type: 'abort', data: {} }] }],
          ['transaction', { actions: [take('t1', 'dup'), take('t1', 'dup')] }],
          ['transaction', { actions: [take('t1', 'g')], properties: { 'completion-mode': 'grouped' } }],
          ['transaction', { actions: [take('t1', 'kept'), take('t2', 'kept')] }],
          ['query-named-block-nodes'],
        ]);
        return replies;
      },
      () => ({ t1: imageFacts('t1.qcow2'), t2: imageFacts('t2.qcow2') }),
    );
    expect(ours.after.t1.snapshots.map((s: Json) => s.name)).toEqual(['kept']);
    expect(ours.after.t1.check.status).toBe(0);
    expect(ours.after.t2.check.status).toBe(0);
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });
});

describe.skipIf(!haveTools)('internal snapshots of nodes a job uses, beside qemu-storage-daemon', () => {
  it('refuses the source and the target of a mirror as the reference does', async () => {
    const setup = (): void => {
      qcow2('src.qcow2');
      qcow2('dst.qcow2');
    };
    const { ours, theirs } = await both(setup, async (c) => {
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: file('src.qcow2') });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'dst', file: file('dst.qcow2') });
      await c.cmd('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'dst', sync: 'full' });
      await c.waitEvent('BLOCK_JOB_READY');
      const replies = await transcript(c, [
        ['blockdev-snapshot-internal-sync', { device: 'src', name: 's' }],
        ['blockdev-snapshot-internal-sync', { device: 'dst', name: 's' }],
        ['blockdev-snapshot-delete-internal-sync', { device: 'dst', name: 's' }],
      ]);
      await c.cmd('block-job-cancel', { device: 'm' });
      await c.waitEvent('BLOCK_JOB_COMPLETED');
      return replies;
    });
    expect(JSON.stringify(ours)).toContain('Need a root block node');
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });
});

describe.skipIf(!haveTools)('internal snapshots when the image file cannot grow, beside qemu-storage-daemon', () => {
  // No room at all; room for the L1 copy but not the snapshot table; room for both.
  it.each([0, 64, 128])('answers as the reference with %i KiB to grow, and a failed snapshot leaves the image clean', async (room) => {
    const setup = (): void => {
      qcow2('full.qcow2');
      qemuIo(img('full.qcow2'), 'write -P 1 0 128k');
    };
    setup();
    const limit = Math.ceil(fs.statSync(img('full.qcow2')).size / 1024) + room;
    const { ours, theirs } = await both(
      setup,
      async (c) => {
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: file('full.qcow2') });
        return transcript(c, [
          ['blockdev-snapshot-internal-sync', { device: 'n', name: 's1' }],
          ['blockdev-snapshot-internal-sync', { device: 'n', name: 's1' }],
          ['query-named-block-nodes'],
        ]);
      },
      () => imageFacts('full.qcow2'),
      { fileSizeLimitKiB: limit },
    );
    expect(ours.result[0]['blockdev-snapshot-internal-sync']).toEqual(room < 128 ? { class: 'GenericError', desc: "Failed to create snapshot 's1' on device 'n': File too large" } : {});
    // qbd undoes what it did before the failure; the reference may leave leaked clusters.
    expect(ours.after.check.status).toBe(0);
    delete ours.after.check;
    delete theirs.after.check;
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });
});

describe.skipIf(!haveTools)('internal snapshots, their data', () => {
  it('keeps what each snapshot saw while the image is written, and frees the clusters of deleted snapshots', async () => {
    const size = 4 << 20;
    const image = img('data.qcow2');
    qcow2('data.qcow2', '4M', '-o', 'cluster_size=65536');
    // A snapshot made by qemu-img, and a compressed cluster, before qbd sees the image.
    qemuIo(image, 'write -P 1 0 1M', 'write -c -P 5 2M 64k');
    qemuImg('snapshot', '-c', 'pre', image);
    qemuIo(image, 'write -P 9 3M 64k');
    const atPre = model('m-pre.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k');
    const atS1 = model('m-s1.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k', 'write -P 9 3M 64k');
    const afterS1 = ['write -P 2 100k 8k', 'write -P 2 512k 1M', 'write -P 3 2M 4k', 'write -P 4 3M 64k'];
    const atS2 = model('m-s2.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k', 'write -P 9 3M 64k', ...afterS1);
    const afterS2 = ['write -P 6 0 64k', 'write -P 6 1000k 200k', 'write -z 3M 64k'];
    const final = model('m-final.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k', 'write -P 9 3M 64k', ...afterS1, ...afterS2);

    const session = async (steps: (c: QmpTestClient, sock: string) => Promise<void>): Promise<void> => {
      const d = await startDaemon('qbd', [], { dir: tempDir('qbd-isnap-data-') });
      try {
        const c = await d.client();
        const sock = path.join(d.dir, 'nbd.sock');
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'd', file: { driver: 'file', filename: image } });
        await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
        await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'd', writable: true });
        await steps(c, sock);
      } finally {
        await d.stop();
      }
    };

    let listed: Json = [];
    await session(async (c, sock) => {
      await c.cmd('blockdev-snapshot-internal-sync', { device: 'd', name: 's1' });
      nbdIo(sock, 'd', ...afterS1);
      await c.cmd('transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'd', name: 's2' } }] });
      nbdIo(sock, 'd', ...afterS2);
      listed = (await c.cmd('query-named-block-nodes')).find((n: Json) => n['node-name'] === 'd').image.snapshots;
    });
    expect(check(image).status).toBe(0);
    const onDisk = JSON.parse(qemuImg('info', '--output=json', image)).snapshots;
    expect(listed.map((s: Json) => [s.id, s.name, s['date-sec'], s['vm-clock-nsec']])).toEqual(onDisk.map((s: Json) => [s.id, s.name, s['date-sec'], s['vm-clock-nsec']]));
    expect(onDisk.map((s: Json) => s.name)).toEqual(['pre', 's1', 's2']);
    expectContent(image, 'pre', atPre);
    expectContent(image, 's1', atS1);
    expectContent(image, 's2', atS2);
    expectContent(image, undefined, final);

    await session(async (c, sock) => {
      expect((await c.cmd('blockdev-snapshot-delete-internal-sync', { device: 'd', name: 's1' })).name).toBe('s1');
      // Written while the others remain: still copy-on-write where they share clusters.
      nbdIo(sock, 'd', 'write -P 8 2M 64k');
      expect((await c.cmd('blockdev-snapshot-delete-internal-sync', { device: 'd', id: '1' })).name).toBe('pre');
    });
    expect(check(image).status).toBe(0);
    expect(JSON.parse(qemuImg('info', '--output=json', image)).snapshots.map((s: Json) => s.name)).toEqual(['s2']);
    expectContent(image, 's2', atS2);
    const final2 = model('m-final2.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k', 'write -P 9 3M 64k', ...afterS1, ...afterS2, 'write -P 8 2M 64k');
    expectContent(image, undefined, final2);

    await session(async (c, sock) => {
      await c.cmd('blockdev-snapshot-delete-internal-sync', { device: 'd', name: 's2' });
      // No snapshot left: writes go in place again.
      nbdIo(sock, 'd', 'write -P 10 100k 4k');
    });
    const report = check(image);
    expect(report.status).toBe(0);
    expect(JSON.parse(qemuImg('info', '--output=json', image)).snapshots).toBeUndefined();
    expectContent(image, undefined, model('m-final3.raw', size, 'write -P 1 0 1M', 'write -P 5 2M 64k', 'write -P 9 3M 64k', ...afterS1, ...afterS2, 'write -P 8 2M 64k', 'write -P 10 100k 4k'));
    // The clusters only the snapshots held are free again: a leak would show here.
    expect(report.report.leaks ?? 0).toBe(0);
  });

  it('takes and deletes snapshots while a client keeps writing, and the image stays consistent', async () => {
    const size = 4 << 20;
    const image = img('busy.qcow2');
    qcow2('busy.qcow2', '4M', '-o', 'cluster_size=65536');
    // Every write both overwrites whole clusters and touches parts of others, in an order that revisits each.
    const writes: Array<{ pattern: number; offset: number; bytes: number }> = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 64; i++) writes.push({ pattern: round * 64 + i + 1, offset: (((i * 37) % 56) * 64 + round * 5) << 10, bytes: (48 + (i % 3) * 40) << 10 });
    }
    const commands = writes.map((w) => `write -P ${w.pattern} ${w.offset} ${w.bytes}`);
    const expected = model('m-busy.raw', size, ...commands);
    // A snapshot is taken between two writes: its content is the disk after some prefix of them.
    const states = new Set<string>();
    const disk = Buffer.alloc(size);
    states.add(sha256(disk));
    for (const w of writes) {
      disk.fill(w.pattern, w.offset, w.offset + w.bytes);
      states.add(sha256(disk));
    }
    const d = await startDaemon('qbd', [], { dir: tempDir('qbd-isnap-busy-') });
    try {
      const c = await d.client();
      const sock = path.join(d.dir, 'nbd.sock');
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'b', file: { driver: 'file', filename: image } });
      await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'b', writable: true });
      const args = ['-f', 'raw', ...commands.flatMap((w) => ['-c', w]), `nbd+unix:///b?socket=${sock}`];
      const writer = spawn('qemu-io', args, { stdio: 'ignore' });
      const done = new Promise<number | null>((resolve) => writer.on('exit', resolve));
      let taken = 0;
      let running = true;
      void done.then(() => (running = false));
      // At least three snapshots, more while the writer runs; every other one deleted again.
      while (taken < 3 || (running && taken < 40)) {
        await c.cmd('blockdev-snapshot-internal-sync', { device: 'b', name: `busy${taken}` });
        if (taken % 2 === 1) await c.cmd('blockdev-snapshot-delete-internal-sync', { device: 'b', name: `busy${taken - 1}` });
        taken++;
      }
      expect(await done).toBe(0);
    } finally {
      await d.stop();
    }
    expect(check(image).status).toBe(0);
    expectContent(image, undefined, expected);
    const left = JSON.parse(qemuImg('info', '--output=json', image)).snapshots as Json[];
    expect(left.length).toBeGreaterThan(0);
    for (const snap of left) expect(states.has(sha256(contentOf(image, snap.name))), snap.name).toBe(true);
  });
});
