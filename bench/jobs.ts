/**
 * Block job benchmarks, qbd beside qemu-storage-daemon in the same run, on
 * the same files: mirror of a 1 GiB fully allocated raw image, mirror of a
 * 4 GiB sparse raw image holding 256 MiB of data, backup of a 1 GiB raw
 * image; block-stream, intermediate block-commit and active block-commit on
 * a three-layer qcow2 chain (1 GiB, data in every layer; fresh copies of the
 * same files for every run); and the latency of query-jobs while a job
 * runs. Each figure is the median of the runs, daemons taking turns. Every
 * run starts a fresh daemon that first runs the same kind of job on 64 MiB
 * images, untimed: what is timed is the job, not the daemon's warm-up (for
 * qbd, compiling its hot code), which a job in a long-running daemon does
 * not pay. Before each run the memory the job will fill with page cache is
 * warmed (see `warmPageCache`). Run by hand:
 * `npm run build && node dist/bench/jobs.js [runs] [filter]`; a filter
 * (e.g. `commit`) runs only the cases whose name contains it.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BenchClient } from './qmp-client';
import { hasReference, start } from './daemons';
import { median, printFigures, type Figure } from './report';
import { runMain, warmPageCache } from './tools';

type Which = 'qbd' | 'qsd';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The untimed job each daemon runs before the timed one, on images this large. */
const WARM_UP_SIZE = 64 * MiB;

interface Result {
  seconds: number;
  /** query-jobs round trips while the job ran, in milliseconds. */
  latencies: number[];
}

function raw(file: string, size: number): void {
  fs.rmSync(file, { force: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', file, String(size)]);
}

function fill(file: string, writes: Array<[number, number]>): void {
  const args = writes.flatMap(([off, len], i) => ['-c', `write -P ${(i % 200) + 1} ${off} ${len}`]);
  execFileSync('qemu-io', ['-f', 'raw', ...args, file], { stdio: 'ignore' });
}

/**
 * Starts a job and polls query-jobs until it is gone, completing it at
 * READY: its time from the start command to its end, and the monitor's
 * latency meanwhile.
 */
async function runToEnd(c: BenchClient, id: string, startJob: () => Promise<unknown>): Promise<Result> {
  const latencies: number[] = [];
  const t0 = performance.now();
  await startJob();
  let completed = false;
  for (;;) {
    const q0 = performance.now();
    const jobs = (await c.cmd('query-jobs')) as Array<{ id: string; status: string }>;
    latencies.push(performance.now() - q0);
    const job = jobs.find((j) => j.id === id);
    if (!job) break;
    if (job.status === 'ready' && !completed) {
      completed = true;
      await c.cmd('job-complete', { id });
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { seconds: (performance.now() - t0) / 1000, latencies };
}

/** Adds raw nodes `${prefix}src` and `${prefix}dst` and runs the job between them to its end. */
async function rawJob(c: BenchClient, prefix: string, src: string, dst: string, kind: 'mirror' | 'backup'): Promise<Result> {
  const [source, target, id] = [`${prefix}src`, `${prefix}dst`, `${prefix}job`];
  await c.cmd('blockdev-add', { driver: 'raw', 'node-name': source, file: { driver: 'file', filename: src } });
  await c.cmd('blockdev-add', { driver: 'raw', 'node-name': target, file: { driver: 'file', filename: dst } });
  const args = { 'job-id': id, device: source, target, sync: 'full' };
  return runToEnd(c, id, () => c.cmd(kind === 'mirror' ? 'blockdev-mirror' : 'blockdev-backup', args));
}

/** Times one job on a daemon that first ran the same kind of job on WARM_UP_SIZE bytes, untimed. */
async function runJob(which: Which, src: string, dst: string, warmSrc: string, kind: 'mirror' | 'backup'): Promise<Result> {
  const size = fs.statSync(src).size;
  const warmDst = path.join(path.dirname(dst), 'warm-dst.raw');
  raw(dst, size);
  raw(warmDst, WARM_UP_SIZE);
  warmPageCache(path.dirname(dst), size);
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  try {
    await c.cmd('qmp_capabilities');
    await rawJob(c, 'warm-', warmSrc, warmDst, kind);
    const res = await rawJob(c, '', src, dst, kind);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', '-U', src, dst]);
    return res;
  } finally {
    c.close();
    await d.stop();
  }
}

type ChainJob = 'stream' | 'commit' | 'active commit';
const CHAIN = ['base.qcow2', 'mid.qcow2', 'top.qcow2'];

/**
 * base (half its size in data), mid and top (a quarter each, partly over
 * the layers below): for 1 GiB, 512 MiB of data in base and 256 MiB in
 * each layer above.
 */
function makeChain(dir: string, size: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const stride = size / 16;
  for (const [i, name] of CHAIN.entries()) {
    const file = path.join(dir, name);
    const backing = i > 0 ? ['-b', path.join(dir, CHAIN[i - 1]!), '-F', 'qcow2'] : [];
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...backing, file, String(size)]);
    const writes = Array.from({ length: 16 }, (_, k) => [k * stride + (i * stride) / 8, i === 0 ? stride / 2 : stride / 4] as [number, number]);
    const args = writes.flatMap(([off, len], k) => ['-c', `write -P ${k + 1 + i * 20} ${off} ${len}`]);
    execFileSync('qemu-io', ['-f', 'qcow2', ...args, file], { stdio: 'ignore' });
  }
}

/** A fresh copy of the chain in `template` under `work`, relinked, with a flat raw image of what it shows; all on disk. */
function copyChain(template: string, work: string): { top: string; mid: string; base: string; flat: string } {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const flat = path.join(work, 'flat.raw');
  // Copies keep the backing names, so each layer is copied into place and relinked.
  for (const name of CHAIN) execFileSync('cp', ['--sparse=always', path.join(template, name), path.join(work, name)]);
  for (const [i, name] of CHAIN.entries()) {
    if (i > 0) execFileSync('qemu-img', ['rebase', '-u', '-q', '-b', path.join(work, CHAIN[i - 1]!), '-F', 'qcow2', path.join(work, name)]);
  }
  execFileSync('qemu-img', ['convert', '-O', 'raw', path.join(work, 'top.qcow2'), flat]);
  // Everything goes to disk before the job starts: else the job's flushes wait for this write-back too, and time the set-up.
  for (const file of [...CHAIN.map((name) => path.join(work, name)), flat]) {
    const fd = fs.openSync(file, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  return { base: path.join(work, 'base.qcow2'), mid: path.join(work, 'mid.qcow2'), top: path.join(work, 'top.qcow2'), flat };
}

/** Opens the chain under node name `top` and runs the job on it to its end. */
async function chainJob(c: BenchClient, top: string, chain: { top: string; mid: string }, kind: ChainJob): Promise<Result> {
  const id = `${top}-job`;
  await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': top, file: { driver: 'file', filename: chain.top } });
  const nodes = (await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; drv: string; file: string }>;
  const mid = nodes.find((n) => n.drv === 'qcow2' && n.file === chain.mid)!['node-name'];
  if (kind === 'stream') return runToEnd(c, id, () => c.cmd('block-stream', { 'job-id': id, device: top }));
  if (kind === 'commit') return runToEnd(c, id, () => c.cmd('block-commit', { 'job-id': id, device: top, 'top-node': mid }));
  return runToEnd(c, id, () => c.cmd('block-commit', { 'job-id': id, device: top }));
}

/** Times a commit or stream on a fresh copy of the chain in `template`, on a daemon that first ran the same job on a small chain. */
async function runChainJob(which: Which, template: string, warmTemplate: string, work: string, kind: ChainJob): Promise<Result> {
  const chain = copyChain(template, path.join(work, 'timed'));
  const warm = copyChain(warmTemplate, path.join(work, 'warm'));
  warmPageCache(work, GiB);
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  let res: Result;
  try {
    await c.cmd('qmp_capabilities');
    await chainJob(c, 'warm', warm, kind);
    res = await chainJob(c, 'top', chain, kind);
  } finally {
    c.close();
    await d.stop();
  }
  // The result must still show what the chain showed.
  execFileSync('qemu-img', ['compare', '-q', '-F', 'raw', kind === 'active commit' ? chain.base : chain.top, chain.flat]);
  return res;
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 2);
  const filter = process.argv[3];
  const wanted = (name: string) => filter === undefined || name.includes(filter);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-bench-jobs-'));
  const reference = hasReference();
  const daemons: Which[] = reference ? ['qsd', 'qbd'] : ['qbd'];
  try {
    const full = path.join(dir, 'full.raw');
    const sparse = path.join(dir, 'sparse.raw');
    const dst = path.join(dir, 'dst.raw');
    const warmSrc = path.join(dir, 'warm-src.raw');
    raw(warmSrc, WARM_UP_SIZE);
    fill(warmSrc, [[0, WARM_UP_SIZE]]);
    const cases = (
      [
        ['mirror 1 GiB allocated raw', full, 'mirror'],
        ['mirror 4 GiB sparse raw (256 MiB data)', sparse, 'mirror'],
        ['backup 1 GiB allocated raw', full, 'backup'],
      ] as Array<[string, string, 'mirror' | 'backup']>
    ).filter(([name]) => wanted(name));
    if (cases.some(([, src]) => src === full)) {
      raw(full, GiB);
      fill(full, Array.from({ length: 16 }, (_, i) => [i * 64 * MiB, 64 * MiB] as [number, number]));
    }
    if (cases.some(([, src]) => src === sparse)) {
      raw(sparse, 4 * GiB);
      fill(sparse, Array.from({ length: 16 }, (_, i) => [i * 256 * MiB, 16 * MiB] as [number, number]));
    }
    const figures: Figure[] = [];
    const latency: Record<Which, number[]> = { qbd: [], qsd: [] };
    for (const [name, src, kind] of cases) {
      const times: Record<Which, number[]> = { qbd: [], qsd: [] };
      for (let r = 0; r < runs; r++) {
        for (const which of daemons) {
          const res = await runJob(which, src, dst, warmSrc, kind);
          times[which].push(res.seconds);
          latency[which].push(...res.latencies);
        }
      }
      console.error(`${name}: ${daemons.map((w) => `${w} ${times[w].map((t) => t.toFixed(2)).join(' ')}`).join(', ')} s`);
      figures.push({ name, unit: 's', qbd: median(times.qbd), qsd: reference ? median(times.qsd) : undefined, lowerIsBetter: true });
    }
    const chainCases = (
      [
        ['stream', 'block-stream, 3-layer qcow2 chain, 1 GiB'],
        ['commit', 'block-commit mid into base, 3-layer qcow2 chain'],
        ['active commit', 'block-commit active layer into base (to READY + complete)'],
      ] as Array<[ChainJob, string]>
    ).filter(([, name]) => wanted(name));
    const template = path.join(dir, 'chain');
    const warmTemplate = path.join(dir, 'warm-chain');
    if (chainCases.length > 0) {
      makeChain(template, GiB);
      makeChain(warmTemplate, WARM_UP_SIZE);
    }
    for (const [kind, name] of chainCases) {
      const times: Record<Which, number[]> = { qbd: [], qsd: [] };
      for (let r = 0; r < runs; r++) {
        for (const which of daemons) {
          const res = await runChainJob(which, template, warmTemplate, path.join(dir, 'work'), kind);
          times[which].push(res.seconds);
          latency[which].push(...res.latencies);
        }
      }
      console.error(`${name}: ${daemons.map((w) => `${w} ${times[w].map((t) => t.toFixed(2)).join(' ')}`).join(', ')} s`);
      figures.push({ name, unit: 's', qbd: median(times.qbd), qsd: reference ? median(times.qsd) : undefined, lowerIsBetter: true });
    }
    const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] ?? 0;
    if (latency.qbd.length > 0) figures.push({ name: 'query-jobs during a job, median', unit: 'ms', qbd: median(latency.qbd), qsd: reference ? median(latency.qsd) : undefined, lowerIsBetter: true });
    if (latency.qbd.length > 0) figures.push({ name: 'query-jobs during a job, p99', unit: 'ms', qbd: p99(latency.qbd), qsd: reference ? p99(latency.qsd) : undefined, lowerIsBetter: true });
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
