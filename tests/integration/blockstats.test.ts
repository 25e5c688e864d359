/**
 * query-block and query-blockstats. The same graph (file, raw over file,
 * qcow2 over file with a raw backing, null-co, an NBD client node, a
 * copy-before-write filter with snapshot-access above it, a mirror job's
 * filter) on qbd and on qemu-storage-daemon gives the same reply shapes:
 * keys, nesting, members present, their order. Then, on qbd alone, the
 * counters are real: requests sent through an NBD export show up, exactly,
 * on the exported node and on its file child, refused ones as invalid and
 * failed ones as failed; and they stay with a node that moves to an iothread.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir, type Flavour, type RunningDaemon } from '../helpers/daemons';
import { deleteExport, type QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { startNbdDaemon, type NbdDaemon } from '../nbd/support/nbd-daemon';
import { RawClient } from '../nbd/support/raw-client';

const KiB = 1024;
const MiB = 1 << 20;
const NBD_CMD = { READ: 0, WRITE: 1, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 };
const NBD_EINVAL = 22;
const NBD_ENOSPC = 28;

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');

/** Every object's keys in order, by path: what "same shape, same order" means here. */
function keyOrder(value: Json, at = '$', out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v, i) => keyOrder(v, `${at}[${i}]`, out));
  else if (value && typeof value === 'object') {
    out.push(`${at}: ${Object.keys(value).join(' ')}`);
    for (const [k, v] of Object.entries(value)) keyOrder(v, `${at}.${k}`, out);
  }
  return out;
}

/** idle_time_ns: qbd shows it once a node has seen a request; the reference never does at node level. */
function withoutIdleTime(value: Json): Json {
  if (Array.isArray(value)) return value.map(withoutIdleTime);
  if (value && typeof value === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) if (k !== 'idle_time_ns') out[k] = withoutIdleTime(v);
    return out;
  }
  return value;
}

function statsOf(list: Json[], node: string): Json {
  const entry = list.find((s) => s['node-name'] === node);
  if (!entry) throw new Error(`no BlockStats for ${node}`);
  return entry;
}

function makeImages(dir: string): void {
  for (const [name, size] of [['r.raw', 8 * MiB], ['base.raw', 16 * MiB], ['fleece.raw', 8 * MiB]] as const) {
    fs.writeFileSync(path.join(dir, name), '');
    fs.truncateSync(path.join(dir, name), size);
  }
  // Data in the backing file: a read of it through the overlay reaches the whole chain (the export sends holes without reading).
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 64k', path.join(dir, 'base.raw')], { stdio: 'ignore' });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path.join(dir, 'top.qcow2')], { cwd: dir });
}

function graphArgs(dir: string, nbdServer: NbdDaemon): string[] {
  const blockdevs = [
    `file,node-name=f1,filename=${dir}/r.raw`,
    'raw,node-name=r1,file=f1',
    `file,node-name=bf,filename=${dir}/base.raw`,
    'raw,node-name=b1,file=bf',
    `file,node-name=tf,filename=${dir}/top.qcow2`,
    'qcow2,node-name=q1,file=tf,backing=b1',
    'null-co,node-name=n1,size=1048576',
    `nbd,node-name=nb,server.type=unix,server.path=${nbdServer.socket},export=disk`,
  ];
  return [
    ...blockdevs.flatMap((b) => ['--blockdev', b]),
    '--nbd-server', `addr.type=unix,addr.path=${dir}/nbd.sock`,
    '--export', 'nbd,id=e1,node-name=q1,writable=on',
  ];
}

interface Transcript {
  /** Replies of the queries, normalised. */
  replies: Json[];
  /** query-blockstats with query-nodes after the same requests through the export. */
  afterIo: Json[];
}

/** Builds the graph, asks the queries, sends requests through the export of q1, asks again. */
async function transcript(flavour: Flavour, nbdServer: NbdDaemon): Promise<Transcript> {
  const dir = tempDir(`qbd-blockstats-${flavour}-`);
  makeImages(dir);
  const d = await startDaemon(flavour, graphArgs(dir, nbdServer), { dir });
  try {
    const c = await d.client();
    await c.cmd('blockdev-add', { driver: 'file', 'node-name': 'flf', filename: `${dir}/fleece.raw` });
    await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'r1', target: 'flf' });
    await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'sa', file: 'cbw' });
    await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'src', size: 1 << 30 });
    await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'dst', size: 1 << 30 });
    await c.cmd('blockdev-mirror', { 'job-id': 'm1', device: 'src', target: 'dst', sync: 'full', speed: 1024 });
    const replies: Json[] = [];
    for (const [command, args] of [
      ['query-block', undefined],
      ['query-blockstats', undefined],
      ['query-blockstats', { 'query-nodes': false }],
      ['query-blockstats', { 'query-nodes': true }],
      ['query-blockstats', { 'query-nodes': 1 }],
      ['query-blockstats', { bogus: true }],
      ['query-block', { 'query-nodes': true }],
    ] as const) {
      replies.push(normalise(await c.execute(command, args), dir));
    }
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 1 64k 128k', '-c', 'read 0 4k', '-c', 'flush', '-c', 'write -z 1M 64k', `nbd+unix:///q1?socket=${dir}/nbd.sock`], { stdio: 'ignore' });
    const afterIo = normalise(await c.cmd('query-blockstats', { 'query-nodes': true }), dir);
    await c.cmd('block-job-cancel', { device: 'm1', force: true });
    await c.waitEvent('BLOCK_JOB_CANCELLED');
    c.close();
    return { replies, afterIo };
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!haveTools)('query-block and query-blockstats against qemu-storage-daemon', () => {
  let server: NbdDaemon;
  let ours: Transcript;
  let theirs: Transcript;

  beforeAll(async () => {
    server = await startNbdDaemon('qsd');
    ours = await transcript('qbd', server);
    theirs = await transcript('qsd', server);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
  });

  it('answers query-block and query-blockstats without query-nodes with no named backend, exports and jobs notwithstanding', () => {
    for (const i of [0, 1, 2]) {
      expect(theirs.replies[i]).toEqual({ return: [] });
      expect(ours.replies[i]).toEqual(theirs.replies[i]);
    }
  });

  it('refuses bad arguments with the reference errors', () => {
    for (const i of [4, 5, 6]) {
      expect(theirs.replies[i].error).toBeDefined();
      expect(ours.replies[i]).toEqual(theirs.replies[i]);
    }
  });

  it('gives one BlockStats per node, in the reference order, members and nesting alike', () => {
    const a = ours.replies[3].return;
    const b = theirs.replies[3].return;
    expect(a.map((s: Json) => s['node-name'])).toEqual(b.map((s: Json) => s['node-name']));
    expect(structuralDiff(withoutIdleTime(a), b)).toEqual([]);
    expect(keyOrder(withoutIdleTime(a))).toEqual(keyOrder(b));
  });

  it('shows the data child as parent, never backing, and file statistics on file nodes only', () => {
    const a = ours.replies[3].return;
    const parentOf = (n: string) => statsOf(a, n).parent?.['node-name'];
    expect([parentOf('r1'), parentOf('q1'), parentOf('cbw'), parentOf('sa'), parentOf('#block')]).toEqual(['f1', 'tf', 'r1', 'cbw', 'src']);
    for (const n of ['f1', 'n1', 'nb', 'src']) expect(parentOf(n)).toBeUndefined();
    expect(a.some((s: Json) => 'backing' in s)).toBe(false);
    expect(statsOf(a, 'tf')['driver-specific']).toEqual({ driver: 'file', 'discard-nb-ok': 0, 'discard-nb-failed': 0, 'discard-bytes-ok': 0 });
    for (const n of ['r1', 'q1', 'n1', 'nb', 'cbw', 'sa']) expect(statsOf(a, n)['driver-specific']).toBeUndefined();
  });

  it('reports the same highest written offsets as the reference after the same writes', () => {
    for (const node of ['q1', 'tf', 'b1', 'bf']) {
      expect(statsOf(ours.afterIo, node).stats.wr_highest_offset, node).toBe(statsOf(theirs.afterIo, node).stats.wr_highest_offset);
    }
    expect(statsOf(ours.afterIo, 'q1').stats.wr_highest_offset).toBe(MiB + 64 * KiB);
    expect(keyOrder(withoutIdleTime(ours.afterIo))).toEqual(keyOrder(theirs.afterIo));
  });

  it('counts the requests of the export on the qcow2 node, its file and its backing chain', () => {
    const q1 = statsOf(ours.afterIo, 'q1').stats;
    expect([q1.wr_operations, q1.wr_bytes, q1.rd_operations, q1.rd_bytes]).toEqual([2, 128 * KiB + 64 * KiB, 1, 4 * KiB]);
    expect(q1.flush_operations).toBeGreaterThanOrEqual(1);
    expect(q1.wr_total_time_ns).toBeGreaterThan(0);
    expect(q1.idle_time_ns).toBeGreaterThanOrEqual(0);
    // Data and metadata: at least the guest's bytes reach the file, and the read of an unallocated cluster the backing chain.
    const tf = statsOf(ours.afterIo, 'tf').stats;
    expect(tf.wr_bytes).toBeGreaterThanOrEqual(128 * KiB);
    expect(tf.flush_operations).toBeGreaterThanOrEqual(1);
    expect(statsOf(ours.afterIo, 'b1').stats.rd_bytes).toBeGreaterThanOrEqual(4 * KiB);
    expect(statsOf(ours.afterIo, 'bf').stats.rd_bytes).toBeGreaterThanOrEqual(4 * KiB);
    // The reference counts nothing at node level; only its highest offsets are real.
    const ref = statsOf(theirs.afterIo, 'q1').stats;
    expect([ref.wr_operations, ref.rd_operations, ref.account_failed]).toEqual([0, 0, false]);
  });
});

/** A raw node over a file, both discarding, exported writable as `rr`. */
async function rawExport(opts: { fileSizeLimitKiB?: number } = {}): Promise<{ d: RunningDaemon; c: QmpTestClient; dir: string; socket: string }> {
  const dir = tempDir('qbd-blockstats-counters-');
  fs.writeFileSync(path.join(dir, 'r.raw'), '');
  fs.truncateSync(path.join(dir, 'r.raw'), 4 * MiB);
  const socket = path.join(dir, 'nbd.sock');
  const d = await startDaemon(
    'qbd',
    [
      '--blockdev', `file,node-name=fr,filename=${dir}/r.raw,discard=unmap`,
      '--blockdev', 'raw,node-name=rr,file=fr,discard=unmap',
      '--nbd-server', `addr.type=unix,addr.path=${socket}`,
      '--export', 'nbd,id=e1,node-name=rr,name=rr,writable=on',
    ],
    { dir, ...opts },
  );
  return { d, c: await d.client(), dir, socket };
}

async function nbdClient(socket: string): Promise<RawClient> {
  const raw = await RawClient.connect(socket);
  await raw.start();
  const replies = await raw.go('rr');
  expect(replies[replies.length - 1]!.type).toBe(1);
  return raw;
}

/** One request on simple replies, answered before the next goes out; resolves with the reply's error. */
async function request(raw: RawClient, type: number, offset: number, length: number, payload?: Buffer): Promise<number> {
  raw.request(type, offset, length, payload ? { payload } : {});
  const reply = await raw.simpleReply(type === NBD_CMD.READ ? length : 0);
  return reply.error;
}

async function nodeStats(c: QmpTestClient): Promise<Json[]> {
  return c.cmd('query-blockstats', { 'query-nodes': true });
}

describe('per-node I/O accounting', () => {
  it('counts reads, writes, zeroes, flushes and discards exactly, on the exported node and its file', async () => {
    const { d, c, dir, socket } = await rawExport();
    try {
      const before = await nodeStats(c);
      expect(statsOf(before, 'rr').stats.idle_time_ns).toBeUndefined();
      const raw = await nbdClient(socket);
      expect(await request(raw, NBD_CMD.WRITE, 0, 64 * KiB, Buffer.alloc(64 * KiB, 1))).toBe(0);
      expect(await request(raw, NBD_CMD.WRITE, MiB, 128 * KiB, Buffer.alloc(128 * KiB, 2))).toBe(0);
      expect(await request(raw, NBD_CMD.WRITE_ZEROES, 2 * MiB, 4 * KiB)).toBe(0);
      expect(await request(raw, NBD_CMD.READ, 0, 4 * KiB)).toBe(0);
      expect(await request(raw, NBD_CMD.READ, 64 * KiB, 8 * KiB)).toBe(0);
      expect(await request(raw, NBD_CMD.FLUSH, 0, 0)).toBe(0);
      expect(await request(raw, NBD_CMD.TRIM, 0, 64 * KiB)).toBe(0);
      // Refused by the export before they reach the node: invalid, on the exported node only.
      expect(await request(raw, NBD_CMD.READ, 4 * MiB, 512)).toBe(NBD_EINVAL);
      expect(await request(raw, NBD_CMD.WRITE, 4 * MiB - 512, 1024, Buffer.alloc(1024))).toBe(NBD_ENOSPC);
      raw.close();

      const after = await nodeStats(c);
      for (const node of ['rr', 'fr']) {
        const s = statsOf(after, node).stats;
        expect(
          {
            rd: [s.rd_operations, s.rd_bytes],
            wr: [s.wr_operations, s.wr_bytes, s.wr_highest_offset],
            flush: s.flush_operations,
            unmap: [s.unmap_operations, s.unmap_bytes],
            failed: [s.failed_rd_operations, s.failed_wr_operations, s.failed_flush_operations, s.failed_unmap_operations],
            merged: [s.rd_merged, s.wr_merged, s.unmap_merged],
          },
          node,
        ).toEqual({
          rd: [2, 12 * KiB],
          wr: [3, 64 * KiB + 128 * KiB + 4 * KiB, 2 * MiB + 4 * KiB],
          flush: 1,
          unmap: [1, 64 * KiB],
          failed: [0, 0, 0, 0],
          merged: [0, 0, 0],
        });
        for (const t of [s.rd_total_time_ns, s.wr_total_time_ns, s.flush_total_time_ns, s.unmap_total_time_ns]) expect(t, node).toBeGreaterThan(0);
        expect(s.idle_time_ns, node).toBeGreaterThanOrEqual(0);
        expect([s.account_invalid, s.account_failed, s.timed_stats]).toEqual([true, true, []]);
      }
      const rr = statsOf(after, 'rr');
      expect([rr.stats.invalid_rd_operations, rr.stats.invalid_wr_operations, rr.stats.invalid_flush_operations, rr.stats.invalid_unmap_operations]).toEqual([1, 1, 0, 0]);
      const fr = statsOf(after, 'fr');
      expect([fr.stats.invalid_rd_operations, fr.stats.invalid_wr_operations]).toEqual([0, 0]);
      expect(fr['driver-specific']).toEqual({ driver: 'file', 'discard-nb-ok': 1, 'discard-nb-failed': 0, 'discard-bytes-ok': 64 * KiB });
      // The file child is the parent entry of the raw node, with the same counters.
      expect(rr.parent).toEqual({ ...fr, stats: { ...fr.stats, idle_time_ns: rr.parent.stats.idle_time_ns } });
    } finally {
      c.close();
      await d.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('counts a write the file refuses as failed, not as written', async () => {
    // Past RLIMIT_FSIZE the file's write fails with EFBIG.
    const { d, c, dir, socket } = await rawExport({ fileSizeLimitKiB: 1024 });
    try {
      const raw = await nbdClient(socket);
      expect(await request(raw, NBD_CMD.WRITE, 0, 4 * KiB, Buffer.alloc(4 * KiB, 3))).toBe(0);
      // EFBIG travels as ENOSPC, the NBD error for a write that does not fit.
      expect(await request(raw, NBD_CMD.WRITE, 2 * MiB, 4 * KiB, Buffer.alloc(4 * KiB, 4))).toBe(NBD_ENOSPC);
      raw.close();
      const after = await nodeStats(c);
      for (const node of ['rr', 'fr']) {
        const s = statsOf(after, node).stats;
        expect([s.wr_operations, s.wr_bytes, s.failed_wr_operations, s.invalid_wr_operations], node).toEqual([1, 4 * KiB, 1, 0]);
        // As in QEMU, the end of a write counts towards the highest offset whatever its result.
        expect(s.wr_highest_offset, node).toBe(2 * MiB + 4 * KiB);
      }
    } finally {
      c.close();
      await d.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps a node counters when it moves to an iothread', async () => {
    const { d, c, dir, socket } = await rawExport();
    try {
      const raw = await nbdClient(socket);
      expect(await request(raw, NBD_CMD.WRITE, 0, 64 * KiB, Buffer.alloc(64 * KiB, 5))).toBe(0);
      expect(await request(raw, NBD_CMD.READ, 0, 4 * KiB)).toBe(0);
      raw.close();
      await deleteExport(c, 'e1');
      const before = statsOf(await nodeStats(c), 'rr').stats;
      await c.cmd('object-add', { 'qom-type': 'iothread', id: 'io0' });
      await c.cmd('x-blockdev-set-iothread', { 'node-name': 'rr', iothread: 'io0' });
      const after = statsOf(await nodeStats(c), 'rr').stats;
      expect([after.wr_operations, after.wr_bytes, after.wr_highest_offset, after.rd_operations, after.rd_bytes]).toEqual([1, 64 * KiB, 64 * KiB, 1, 4 * KiB]);
      expect([after.wr_total_time_ns, after.rd_total_time_ns]).toEqual([before.wr_total_time_ns, before.rd_total_time_ns]);
      // Leaving its context flushed the node once more.
      expect(after.flush_operations).toBe(before.flush_operations + 1);
      expect(after.idle_time_ns).toBeGreaterThanOrEqual(0);
    } finally {
      c.close();
      await d.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
