/**
 * qcow2 throughput through qbd's block layer, beside `qemu-img bench` doing
 * the same work on the same kind of image: sequential write into a fresh
 * image, sequential read of it, and 4 KiB writes spread over a fresh image
 * (each allocating a cluster). Same request size, queue depth and cache mode
 * (writeback) on both sides. The allocating writes are also run with a flush
 * every 64 requests (in-flight requests drained first, as `qemu-img bench
 * --flush-interval` does), on plain images and on lazy-refcounts images,
 * where a flush no longer orders refcount blocks before L2 tables.
 * Run by hand: `npm run build && node dist/bench/qcow2.js [name filter]`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { blockdevAdd, blockdevDel, closeAllNodes, descriptorOf } from '../src/block/global-state/blockdev';
import { findNode } from '../src/block/global-state/graph';
import { getDefaultContext, stopAllContexts } from '../src/block/global-state/io-contexts';
import * as proto from '../src/block/common/io-context-protocol';
import { IoGraph } from '../src/block/io/io-graph';
import { flushNode, readNode, writeNode } from '../src/block/io/request';
import { median, printFigures, type Figure } from './report';

const IMAGE_SIZE = 256 << 20;
const RUNS = 5;

interface Workload {
  name: string;
  write: boolean;
  /** Request size in bytes. */
  size: number;
  depth: number;
  count: number;
  /** Distance between successive requests; wraps at the image end (as qemu-img bench's offset does). */
  step: number;
  /** Read an image the previous write workload filled instead of a fresh one. */
  reuse: boolean;
  /** Drain and flush after every this many requests (0: never). */
  flushEvery?: number;
  /** Create the images with lazy_refcounts=on. */
  lazy?: boolean;
}

const WORKLOADS: Workload[] = [
  { name: 'sequential write 64 KiB, depth 8', write: true, size: 65536, depth: 8, count: IMAGE_SIZE / 65536, step: 65536, reuse: false },
  { name: 'sequential read 64 KiB, depth 8', write: false, size: 65536, depth: 8, count: IMAGE_SIZE / 65536, step: 65536, reuse: true },
  // 2729 is prime: the 4 KiB requests visit distinct blocks all over the image, each allocating a cluster.
  { name: '4 KiB scattered write, depth 8', write: true, size: 4096, depth: 8, count: 8192, step: 4096 * 2729, reuse: false },
  { name: 'sequential write 64 KiB, depth 8, flush every 64', write: true, size: 65536, depth: 8, count: IMAGE_SIZE / 65536, step: 65536, reuse: false, flushEvery: 64 },
  { name: 'sequential write 64 KiB, depth 8, flush every 64, lazy refcounts', write: true, size: 65536, depth: 8, count: IMAGE_SIZE / 65536, step: 65536, reuse: false, flushEvery: 64, lazy: true },
  { name: '4 KiB scattered write, depth 8, flush every 64', write: true, size: 4096, depth: 8, count: 8192, step: 4096 * 2729, reuse: false, flushEvery: 64 },
  { name: '4 KiB scattered write, depth 8, flush every 64, lazy refcounts', write: true, size: 4096, depth: 8, count: 8192, step: 4096 * 2729, reuse: false, flushEvery: 64, lazy: true },
];

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function freshImage(file: string, lazy = false): void {
  fs.rmSync(file, { force: true });
  execFileSync('qemu-img', ['create', '-f', 'qcow2', ...(lazy ? ['-o', 'lazy_refcounts=on'] : []), file, String(IMAGE_SIZE)], { stdio: 'ignore' });
}

/** MiB/s of qemu-img bench, from its "Run completed in N seconds". */
function qemuBench(w: Workload, file: string): number {
  const args = ['bench', '-f', 'qcow2', '-t', 'writeback', '-c', String(w.count), '-d', String(w.depth), '-s', String(w.size), '-S', String(w.step)];
  if (w.write) args.push('-w');
  if (w.flushEvery) args.push(`--flush-interval=${w.flushEvery}`);
  const out = execFileSync('qemu-img', [...args, file], { encoding: 'utf8' });
  const m = /Run completed in ([0-9.]+) seconds/.exec(out);
  if (!m) throw new Error(`unexpected qemu-img bench output: ${out}`);
  return (w.count * w.size) / (1 << 20) / Number(m[1]);
}

/** Issues one request; `data` is what a write writes and where a read lands. */
type Issue = (write: boolean, offset: number, size: number, data: Buffer) => Promise<unknown>;
type Flush = () => Promise<unknown>;

/**
 * Runs the workload's requests, `depth` at a time (draining and flushing
 * every `flushEvery`); returns MiB/s. Each queue slot owns one buffer for
 * its whole run, as in qemu-img bench (and as the NBD export reuses its read
 * buffers): a fresh allocation per request would measure the allocator and
 * page faults rather than the I/O path.
 */
async function drive(w: Workload, issue: Issue, flush: Flush): Promise<number> {
  const buffers = Array.from({ length: w.depth }, () => Buffer.alloc(w.size, 0xa5));
  let next = 0;
  const start = process.hrtime.bigint();
  const batch = w.flushEvery || w.count;
  for (let first = 0; first < w.count; first += batch) {
    const stop = Math.min(w.count, first + batch);
    const worker = async (data: Buffer): Promise<void> => {
      while (next < stop) {
        const offset = (next++ * w.step) % IMAGE_SIZE;
        await issue(w.write, offset, w.size, data);
      }
    };
    await Promise.all(buffers.map(worker));
    if (w.flushEvery) await flush();
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return (w.count * w.size) / (1 << 20) / seconds;
}

/** MiB/s of the requests sent to the node's I/O context over its channel, as GS code sends them. */
async function qbdChannelBench(w: Workload, file: string): Promise<number> {
  const name = 'bench';
  await blockdevAdd({ driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file } });
  const node = findNode(name)!;
  const send = (request: proto.NodeRequest) => node.ctx.channel.request(proto.nodeRequest, { nodeName: name, request });
  try {
    return await drive(
      w,
      (write, offset, size, data) => (write ? send({ op: 'write', offset, data }) : send({ op: 'read', offset, bytes: size })),
      () => send({ op: 'flush' }),
    );
  } finally {
    await blockdevDel(name);
  }
}

/**
 * MiB/s of the requests issued inside an I/O context, the way an export or a
 * job's copy loop issues them: the generic request layer and the driver,
 * without a message per request. The I/O halves are built here from the
 * nodes' descriptors (the worker's copies stay idle).
 */
async function qbdDirectBench(w: Workload, file: string): Promise<number> {
  const name = 'bench';
  await blockdevAdd({ driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file } });
  const gsNode = findNode(name)!;
  const graph = new IoGraph();
  graph.attach(descriptorOf(gsNode.child('file')!));
  graph.attach(descriptorOf(gsNode));
  const node = graph.get(name);
  try {
    return await drive(
      w,
      (write, offset, _size, data) => (write ? writeNode(node, offset, data) : readNode(node, offset, data)),
      () => flushNode(node),
    );
  } finally {
    await graph.detach(name);
    await graph.detach(gsNode.child('file')!.name);
    await blockdevDel(name);
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-bench-qcow2-'));
  const reference = hasQemuImg();
  getDefaultContext();
  const figures: Figure[] = [];
  try {
    const qbdFile = path.join(dir, 'qbd.qcow2');
    const qemuFile = path.join(dir, 'qemu.qcow2');
    const filter = process.argv[2];
    for (const w of WORKLOADS) {
      // Only the workloads whose name holds the filter (a read needs the write before it kept too).
      if (filter && !w.name.includes(filter)) continue;
      const channel: number[] = [];
      const direct: number[] = [];
      const theirs: number[] = [];
      for (let run = 0; run < RUNS; run++) {
        if (!w.reuse) freshImage(qbdFile, w.lazy);
        direct.push(await qbdDirectBench(w, qbdFile));
        if (!w.reuse) freshImage(qbdFile, w.lazy);
        channel.push(await qbdChannelBench(w, qbdFile));
        if (reference) {
          if (!w.reuse) freshImage(qemuFile, w.lazy);
          theirs.push(qemuBench(w, qemuFile));
        }
      }
      const ref = reference ? { qsd: median(theirs) } : {};
      figures.push({ name: `${w.name} (in the I/O context)`, unit: 'MiB/s', qbd: median(direct), lowerIsBetter: false, ...ref });
      figures.push({ name: `${w.name} (over the channel)`, unit: 'MiB/s', qbd: median(channel), lowerIsBetter: false, ...ref });
    }
  } finally {
    await closeAllNodes();
    await stopAllContexts();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log('qcow2 through the block layer (qemu-storage-daemon column: qemu-img bench)');
  printFigures(figures);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
