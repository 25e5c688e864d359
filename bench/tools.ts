/** What several benchmarks share: running a tool, and making a data image. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';

/** Runs a tool and resolves with its standard output; rejects with its standard error. */
export function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd}: ${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

/** A raw file of `size` bytes of non-zero data (no holes, so reads move real bytes). */
export function makeDataImage(file: string, size: number): void {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0 || 1, i);
  const fd = fs.openSync(file, 'w');
  for (let off = 0; off < size; off += chunk.length) fs.writeSync(fd, chunk, 0, chunk.length, off);
  fs.closeSync(fd);
}

/** Runs a benchmark's main, printing its error and exiting 1 when it fails. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: Error) => {
    console.error(err.message);
    process.exit(1);
  });
}

/**
 * Writes `bytes` to a scratch file in `dir` and deletes it, just before a
 * timed run that writes about as much into the page cache. On a virtual
 * machine that hands freed memory back to its host, the first write to such
 * memory costs several times a normal one (measured here: 1 GiB through the
 * page cache in 3.3 s cold, 0.17 s warm), and whichever daemon ran first
 * after a large file was deleted would pay it. Taking that memory back
 * first lets both daemons start alike.
 */
export function warmPageCache(dir: string, bytes: number): void {
  const scratch = `${dir}/warm-page-cache.tmp`;
  const chunk = Buffer.alloc(4 << 20, 1);
  const fd = fs.openSync(scratch, 'w');
  try {
    for (let off = 0; off < bytes; off += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off), off);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(scratch, { force: true });
  }
}

/** Seconds that `fn` takes. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export interface FioResult {
  iops: number;
  p99us: number;
}

/**
 * fio's nbd engine, 4 KiB random requests at queue depth 32 over `size`
 * bytes of the export: for `seconds` after a second of ramp, or until
 * `ioBytes` were moved when given (each request then touches a block no
 * other touched: fio's random map).
 */
export async function fioNbd(uri: string, rw: 'randread' | 'randwrite', jobs: number, seconds: number, size: number, ioBytes?: number): Promise<FioResult> {
  const length = ioBytes === undefined ? ['--time_based', `--runtime=${seconds}`, '--ramp_time=1'] : [`--io_size=${ioBytes}`];
  const out = await run('fio', [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bs=4k', '--iodepth=32',
    `--numjobs=${jobs}`, '--group_reporting', ...length, `--size=${size}`, '--output-format=json',
  ]);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = rw === 'randread' ? job.read : job.write;
  return { iops: side.iops, p99us: (side.clat_ns?.percentile?.['99.000000'] ?? 0) / 1000 };
}
