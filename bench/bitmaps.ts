/**
 * Cost of dirty tracking on the write path, qbd beside qemu-storage-daemon
 * in the same run: fio's nbd engine doing 4 KiB random writes at queue depth
 * 32 through an NBD export of a raw file, with 0, 1 and 8 enabled dirty
 * bitmaps on the exported node (IOPS, and each count's IOPS relative to no
 * bitmap). Run by hand: `npm run build && node dist/bench/bitmaps.js`
 * (FIO_SECONDS=N to change the length of each run, default 8).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, start } from './daemons';
import { BenchClient } from './qmp-client';
import { printFigures, type Figure } from './report';

type Which = 'qbd' | 'qsd';

const SIZE = 1 << 30;
const FIO_SECONDS = Number(process.env.FIO_SECONDS) || 8;
const BITMAP_COUNTS = [0, 1, 8];

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd}: ${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

async function randwriteIops(uri: string): Promise<number> {
  const out = await run('fio', [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=32',
    '--numjobs=1', '--time_based', `--runtime=${FIO_SECONDS}`, '--ramp_time=1', `--size=${SIZE}`, '--output-format=json',
  ]);
  return JSON.parse(out.slice(out.indexOf('{'))).jobs[0].write.iops;
}

/** IOPS with `bitmaps` enabled bitmaps (granularity 64 KiB, spread over the image by the random writes). */
async function measure(which: Which, image: string, bitmaps: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(path.dirname(image), `${which}-`));
  const sock = path.join(dir, 'nbd.sock');
  const daemon = await start(which, [
    '--blockdev', `driver=file,filename=${image},node-name=disk`,
    '--nbd-server', `addr.type=unix,addr.path=${sock}`,
    '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
  ]);
  try {
    const qmp = await BenchClient.connect(daemon.qmp);
    await qmp.cmd('qmp_capabilities');
    for (let i = 0; i < bitmaps; i++) await qmp.cmd('block-dirty-bitmap-add', { node: 'disk', name: `b${i}` });
    const iops = await randwriteIops(`nbd+unix:///disk?socket=${sock}`);
    qmp.close();
    return iops;
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-bitmaps-');
  try {
    const image = path.join(dir, 'disk.raw');
    // Written through once: the runs must not differ by which of them allocated the file's blocks.
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const fd = fs.openSync(image, 'w');
    for (let off = 0; off < SIZE; off += chunk.length) fs.writeSync(fd, chunk, 0, chunk.length, off);
    fs.closeSync(fd);
    const figures: Figure[] = [];
    const base: Partial<Record<Which, number>> = {};
    for (const n of BITMAP_COUNTS) {
      const qbd = await measure('qbd', image, n);
      const qsd = hasReference() ? await measure('qsd', image, n) : undefined;
      base.qbd ??= qbd;
      if (qsd !== undefined) base.qsd ??= qsd;
      const f: Figure = { name: `fio 4k randwrite QD32, ${n} bitmap${n === 1 ? '' : 's'}`, unit: 'IOPS', qbd, lowerIsBetter: false };
      if (qsd !== undefined) f.qsd = qsd;
      figures.push(f);
      if (n > 0) {
        const rel: Figure = { name: `  relative to no bitmap`, unit: '%', qbd: (100 * qbd) / base.qbd, lowerIsBetter: false };
        if (qsd !== undefined && base.qsd !== undefined) rel.qsd = (100 * qsd) / base.qsd;
        figures.push(rel);
      }
    }
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
