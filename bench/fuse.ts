/**
 * FUSE export benchmarks, qbd beside qemu-storage-daemon on the same raw
 * file in the same run: fio on the mounted file, sequential reads and
 * writes of 1 MiB with the psync engine, and 4 KiB random reads and writes
 * with psync (one request at a time) and with libaio at queue depth 32
 * (O_DIRECT, so the kernel sends requests in parallel). Each figure is a
 * time-based fio run after a second of ramp. Needs root and /dev/fuse, as
 * both daemons mount in-process. Run by hand:
 * `npm run build && node dist/bench/fuse.js` (FIO_SECONDS=N to change the
 * length of each run, default 8; FUSE_BENCH_MIB=N the image size, default 1024).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, start } from './daemons';
import { printFigures, type Figure } from './report';
import { makeDataImage, run, runMain } from './tools';

const SIZE = (Number(process.env.FUSE_BENCH_MIB) || 1024) << 20;
const FIO_SECONDS = Number(process.env.FIO_SECONDS) || 8;

interface Work {
  name: string;
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: string;
  engine: 'psync' | 'libaio';
  iodepth: number;
  unit: 'MiB/s' | 'IOPS';
}

const WORK: Work[] = [
  { name: 'fio 1M sequential read, psync', rw: 'read', bs: '1M', engine: 'psync', iodepth: 1, unit: 'MiB/s' },
  { name: 'fio 1M sequential write, psync', rw: 'write', bs: '1M', engine: 'psync', iodepth: 1, unit: 'MiB/s' },
  { name: 'fio 4k randread, psync', rw: 'randread', bs: '4k', engine: 'psync', iodepth: 1, unit: 'IOPS' },
  { name: 'fio 4k randwrite, psync', rw: 'randwrite', bs: '4k', engine: 'psync', iodepth: 1, unit: 'IOPS' },
  { name: 'fio 4k randread, libaio QD32', rw: 'randread', bs: '4k', engine: 'libaio', iodepth: 32, unit: 'IOPS' },
  { name: 'fio 4k randwrite, libaio QD32', rw: 'randwrite', bs: '4k', engine: 'libaio', iodepth: 32, unit: 'IOPS' },
];

async function fio(file: string, w: Work): Promise<number> {
  const out = await run('fio', [
    '--name=bench', `--filename=${file}`, `--ioengine=${w.engine}`, `--rw=${w.rw}`, `--bs=${w.bs}`, `--iodepth=${w.iodepth}`,
    // libaio is only asynchronous with O_DIRECT; the export's file bypasses the page cache either way.
    ...(w.engine === 'libaio' ? ['--direct=1'] : []),
    `--size=${SIZE}`, '--time_based', `--runtime=${FIO_SECONDS}`, '--ramp_time=1', '--output-format=json',
  ]);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = w.rw.endsWith('read') ? job.read : job.write;
  return w.unit === 'IOPS' ? side.iops : side.bw_bytes / (1 << 20);
}

async function measure(which: 'qbd' | 'qsd', image: string, dir: string): Promise<Map<string, number>> {
  const mountpoint = path.join(dir, `${which}.mnt`);
  fs.writeFileSync(mountpoint, '');
  const daemon = await start(which, [
    '--blockdev', `driver=file,filename=${image},node-name=disk`,
    '--export', `type=fuse,id=e0,node-name=disk,mountpoint=${mountpoint},writable=on`,
  ]);
  const m = new Map<string, number>();
  try {
    for (const w of WORK) m.set(w.name, await fio(mountpoint, w));
  } finally {
    await daemon.stop();
  }
  return m;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-fuse-');
  try {
    const image = path.join(dir, 'disk.raw');
    makeDataImage(image, SIZE);
    const ours = await measure('qbd', image, dir);
    const theirs = hasReference() ? await measure('qsd', image, dir) : undefined;
    const figures: Figure[] = WORK.map((w) => {
      const f: Figure = { name: w.name, unit: w.unit, qbd: ours.get(w.name)!, lowerIsBetter: false };
      const ref = theirs?.get(w.name);
      if (ref !== undefined) f.qsd = ref;
      return f;
    });
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
