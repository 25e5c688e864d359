/**
 * Block job benchmarks, qbd beside qemu-storage-daemon in the same run, on
 * the same files: mirror of a 1 GiB fully allocated raw image, mirror of a
 * 4 GiB sparse raw image holding 256 MiB of data, backup of a 1 GiB raw
 * image; and the latency of query-jobs while a job runs. Each figure is the
 * median of the runs, daemons taking turns. Run by hand:
 * `npm run build && node dist/bench/jobs.js [runs]`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BenchClient } from './qmp-client';
import { hasReference, start } from './daemons';
import { median, printFigures, type Figure } from './report';

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

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-bench-jobs-'));
  const reference = hasReference();
  const daemons: Which[] = reference ? ['qsd', 'qbd'] : ['qbd'];
  try {
    const full = path.join(dir, 'full.raw');
    raw(full, GiB);
    fill(full, Array.from({ length: 16 }, (_, i) => [i * 64 * MiB, 64 * MiB] as [number, number]));
    const sparse = path.join(dir, 'sparse.raw');
    raw(sparse, 4 * GiB);
    fill(sparse, Array.from({ length: 16 }, (_, i) => [i * 256 * MiB, 16 * MiB] as [number, number]));
    const dst = path.join(dir, 'dst.raw');

    const cases: Array<[string, string, 'mirror' | 'backup']> = [
      ['mirror 1 GiB allocated raw', full, 'mirror'],
      ['mirror 4 GiB sparse raw (256 MiB data)', sparse, 'mirror'],
      ['backup 1 GiB allocated raw', full, 'backup'],
    ];
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
      figures.push({ name, unit: 's', qbd: median(times.qbd), qsd: reference ? median(times.qsd) : undefined, lowerIsBetter: true });
    }
    const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] ?? 0;
    figures.push({ name: 'query-jobs during a job, median', unit: 'ms', qbd: median(latency.qbd), qsd: reference ? median(latency.qsd) : undefined, lowerIsBetter: true });
    figures.push({ name: 'query-jobs during a job, p99', unit: 'ms', qbd: p99(latency.qbd), qsd: reference ? p99(latency.qsd) : undefined, lowerIsBetter: true });
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
