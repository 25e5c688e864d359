/**
 * Cost of dirty tracking on the write path, qbd beside qemu-storage-daemon
 * in the same run: fio's nbd engine doing 4 KiB random writes at queue depth
 * 32 through an NBD export of a raw file, with 0, 1 and 8 enabled dirty
 * bitmaps on the exported node (IOPS, and each count's IOPS relative to no
 * bitmap). And the time to read the dirty map of a 1 TiB sparse image over
 * NBD (`nbdinfo --map=qemu:dirty-bitmap:NAME`, median of 5), with a few
 * thousand dirty 64 KiB chunks spread over it. Run by hand:
 * `npm run build && node dist/bench/bitmaps.js` (FIO_SECONDS=N to change
 * the length of each fio run, default 8).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, start } from './daemons';
import { BenchClient } from './qmp-client';
import { median, printFigures, type Figure } from './report';
import { run, runMain } from './tools';

type Which = 'qbd' | 'qsd';

const SIZE = 1 << 30;
const FIO_SECONDS = Number(process.env.FIO_SECONDS) || 8;
const BITMAP_COUNTS = [0, 1, 8];

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

const MAP_SIZE = 2 ** 40;
const MAP_RUNS = 5;

/** Median seconds `nbdinfo --map` takes to read the dirty bitmap of a 1 TiB export; also the extents it listed. */
async function dirtyMapSeconds(which: Which, dir: string): Promise<{ seconds: number; extents: number }> {
  const work = fs.mkdtempSync(path.join(dir, `${which}-map-`));
  const image = path.join(work, 'sparse.raw');
  fs.writeFileSync(image, '');
  fs.truncateSync(image, MAP_SIZE);
  const sock = path.join(work, 'nbd.sock');
  const daemon = await start(which, [
    '--blockdev', `driver=file,filename=${image},node-name=disk`,
    '--nbd-server', `addr.type=unix,addr.path=${sock}`,
  ]);
  try {
    const qmp = await BenchClient.connect(daemon.qmp);
    await qmp.cmd('qmp_capabilities');
    await qmp.cmd('block-dirty-bitmap-add', { node: 'disk', name: 'b', granularity: 65536 });
    await qmp.cmd('block-export-add', { type: 'nbd', id: 'w', 'node-name': 'disk', name: 'w', writable: true });
    // 4096 writes spread over the disk, each dirtying one or two chunks.
    const cmds: string[] = [];
    for (let i = 0; i < 4096; i++) cmds.push('-c', `write ${i * (MAP_SIZE / 4096) + (i % 7) * 40960} 4k`);
    await run('qemu-io', ['-f', 'raw', ...cmds, `nbd+unix:///w?socket=${sock}`]);
    await qmp.cmd('block-export-del', { id: 'w' });
    await qmp.cmd('block-dirty-bitmap-disable', { node: 'disk', name: 'b' });
    await qmp.cmd('block-export-add', { type: 'nbd', id: 'r', 'node-name': 'disk', name: 'r', bitmaps: ['b'] });
    const times: number[] = [];
    let extents = 0;
    for (let i = 0; i < MAP_RUNS; i++) {
      const t0 = process.hrtime.bigint();
      const out = await run('nbdinfo', ['--map=qemu:dirty-bitmap:b', `nbd+unix:///r?socket=${sock}`]);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      extents = out.trim().split('\n').length;
    }
    qmp.close();
    return { seconds: median(times), extents };
  } finally {
    await daemon.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-bitmaps-');
  try {
    const qbdMap = await dirtyMapSeconds('qbd', dir);
    const qsdMap = hasReference() ? await dirtyMapSeconds('qsd', dir) : undefined;
    const map: Figure = { name: `nbdinfo --map of a 1 TiB dirty bitmap (${qbdMap.extents} extents)`, unit: 's', qbd: qbdMap.seconds, lowerIsBetter: true };
    if (qsdMap) map.qsd = qsdMap.seconds;
    printFigures([map]);
    if (process.env.MAP_ONLY) return;
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

runMain(main);
