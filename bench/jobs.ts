/**
 * Block job benchmarks, qbd beside qemu-storage-daemon in the same run, on
 * the same files: mirror of a 1 GiB fully allocated raw image, mirror of a
 * 4 GiB sparse raw image holding 256 MiB of data, backup of a 1 GiB raw
 * image; block-stream, intermediate block-commit and active block-commit on
 * a three-layer qcow2 chain (1 GiB, data in every layer; fresh copies of the
 * same files for every run); and the latency of query-jobs while a job runs. Each figure is the
 * median of the runs, daemons taking turns; before each run the memory the
 * job will fill with page cache is warmed (see `warmPageCache`). Run by hand:
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

/** Runs one job to its end and times it, polling query-jobs (which also measures the monitor's latency). */
async function runJob(which: Which, src: string, dst: string, kind: 'mirror' | 'backup'): Promise<Result> {
  const size = fs.statSync(src).size;
  raw(dst, size);
  warmPageCache(path.dirname(dst), size);
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  try {
    await c.cmd('qmp_capabilities');
    await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
    await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'dst', file: { driver: 'file', filename: dst } });
    const latencies: number[] = [];
    const t0 = performance.now();
    if (kind === 'mirror') await c.cmd('blockdev-mirror', { 'job-id': 'j', device: 'src', target: 'dst', sync: 'full' });
    else await c.cmd('blockdev-backup', { 'job-id': 'j', device: 'src', target: 'dst', sync: 'full' });
    let completed = false;
    for (;;) {
      const q0 = performance.now();
      const jobs = (await c.cmd('query-jobs')) as Array<{ status: string }>;
      latencies.push(performance.now() - q0);
      if (jobs.length === 0) break;
      if (jobs[0]!.status === 'ready' && !completed) {
        completed = true;
        await c.cmd('job-complete', { id: 'j' });
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const seconds = (performance.now() - t0) / 1000;
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', '-U', src, dst]);
    return { seconds, latencies };
  } finally {
    c.close();
    await d.stop();
  }
}

type ChainJob = 'stream' | 'commit' | 'active commit';
const CHAIN = ['base.qcow2', 'mid.qcow2', 'top.qcow2'];

/** base (512 MiB of data), mid and top (256 MiB each, partly over the layers below), 1 GiB each. */
function makeChain(dir: string): void {
  for (const [i, name] of CHAIN.entries()) {
    const file = path.join(dir, name);
    const backing = i > 0 ? ['-b', path.join(dir, CHAIN[i - 1]!), '-F', 'qcow2'] : [];
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...backing, file, String(GiB)]);
    const writes = Array.from({ length: 16 }, (_, k) => [k * 64 * MiB + i * 8 * MiB, i === 0 ? 32 * MiB : 16 * MiB] as [number, number]);
    const args = writes.flatMap(([off, len], k) => ['-c', `write -P ${k + 1 + i * 20} ${off} ${len}`]);
    execFileSync('qemu-io', ['-f', 'qcow2', ...args, file], { stdio: 'ignore' });
  }
}

/** Runs a commit or stream on a fresh copy of the chain in `template` and times it to the job's end. */
async function runChainJob(which: Which, template: string, work: string, kind: ChainJob): Promise<Result> {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work);
  const flat = path.join(work, 'flat.raw');
  // Copies keep the backing names, so each layer is copied into place and relinked.
  for (const name of CHAIN) execFileSync('cp', ['--sparse=always', path.join(template, name), path.join(work, name)]);
  for (const [i, name] of CHAIN.entries()) {
    if (i > 0) execFileSync('qemu-img', ['rebase', '-u', '-q', '-b', path.join(work, CHAIN[i - 1]!), '-F', 'qcow2', path.join(work, name)]);
  }
  execFileSync('qemu-img', ['convert', '-O', 'raw', path.join(work, 'top.qcow2'), flat]);
  // The copies and the flat image go to disk before the job starts: else the job's flushes wait for their write-back too, and time the set-up.
  for (const file of [...CHAIN.map((name) => path.join(work, name)), flat]) {
    const fd = fs.openSync(file, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  warmPageCache(work, GiB);
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  let seconds = 0;
  const latencies: number[] = [];
  try {
    await c.cmd('qmp_capabilities');
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: path.join(work, 'top.qcow2') } });
    const nodes = (await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; drv: string; file: string }>;
    const node = (name: string) => nodes.find((n) => n.drv === 'qcow2' && path.basename(n.file) === name)!['node-name'];
    const t0 = performance.now();
    if (kind === 'stream') await c.cmd('block-stream', { 'job-id': 'j', device: 'top' });
    else if (kind === 'commit') await c.cmd('block-commit', { 'job-id': 'j', device: 'top', 'top-node': node('mid.qcow2') });
    else await c.cmd('block-commit', { 'job-id': 'j', device: 'top' });
    let completed = false;
    for (;;) {
      const q0 = performance.now();
      const jobs = (await c.cmd('query-jobs')) as Array<{ status: string }>;
      latencies.push(performance.now() - q0);
      if (jobs.length === 0) break;
      if (jobs[0]!.status === 'ready' && !completed) {
        completed = true;
        await c.cmd('job-complete', { id: 'j' });
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    seconds = (performance.now() - t0) / 1000;
  } finally {
    c.close();
    await d.stop();
  }
  // The result must still show what the chain showed.
  execFileSync('qemu-img', ['compare', '-q', '-F', 'raw', path.join(work, kind === 'active commit' ? 'base.qcow2' : 'top.qcow2'), flat]);
  return { seconds, latencies };
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
          const res = await runJob(which, src, dst, kind);
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
    fs.mkdirSync(template);
    if (chainCases.length > 0) makeChain(template);
    for (const [kind, name] of chainCases) {
      const times: Record<Which, number[]> = { qbd: [], qsd: [] };
      for (let r = 0; r < runs; r++) {
        for (const which of daemons) {
          const res = await runChainJob(which, template, path.join(dir, 'work'), kind);
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
