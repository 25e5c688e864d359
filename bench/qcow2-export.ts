/**
 * qcow2 through an NBD export, qbd beside qemu-storage-daemon in the same
 * run, each serving its own fresh image made by qemu-img: nbdcopy
 * sequential write of 1 GiB of data into a fresh image (every cluster
 * allocated), sequential read of it back, and fio 4 KiB random writes into
 * a fresh 8 GiB image (16384 of them, each allocating a cluster: the
 * allocation-heavy case). Each figure is the median of three runs, daemons
 * taking turns, each run on a freshly started daemon that first copied
 * 256 MiB into another image and read it back, untimed.
 * Run by hand: `npm run build && node dist/bench/qcow2-export.js`.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, start, type Started } from './daemons';
import { median, printFigures, type Figure } from './report';
import { fioNbd, makeDataImage, run, runMain, timed, warmPageCache } from './tools';

type Which = 'qbd' | 'qsd';
const GiB = 1 << 30;
const RUNS = 3;
const ALLOCATING_WRITES = 16384;
/** The untimed copy before the timed ones: the daemon's warm-up (JIT, first buffers) is not what is measured. */
const WARM_BYTES = 256 << 20;

function freshQcow2(file: string, size: number): void {
  fs.rmSync(file, { force: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
}

interface Served {
  daemon: Started;
  dir: string;
  /** The measured image's export. */
  uri: string;
  /** A second fresh image's export, for an untimed warm-up copy. */
  warmUri: string;
}

async function serveQcow2(which: Which, image: string, warmImage: string): Promise<Served> {
  const dir = fs.mkdtempSync(path.join(path.dirname(image), `${which}-`));
  const sock = path.join(dir, 'nbd.sock');
  const daemon = await start(which, [
    '--blockdev', `driver=file,filename=${image},node-name=file0`,
    '--blockdev', 'driver=qcow2,file=file0,node-name=disk',
    '--blockdev', `driver=file,filename=${warmImage},node-name=file1`,
    '--blockdev', 'driver=qcow2,file=file1,node-name=warm',
    '--nbd-server', `addr.type=unix,addr.path=${sock}`,
    '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
    '--export', 'type=nbd,id=e1,node-name=warm,name=warm,writable=on',
  ]);
  while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 5));
  return { daemon, dir, uri: `nbd+unix:///disk?socket=${sock}`, warmUri: `nbd+unix:///warm?socket=${sock}` };
}

/** Runs `work` against a fresh daemon serving `image` (and a fresh warm-up image). */
async function withExport(which: Which, image: string, size: number, work: (s: Served) => Promise<void>): Promise<void> {
  const warmImage = path.join(path.dirname(image), 'warm.qcow2');
  freshQcow2(image, size);
  freshQcow2(warmImage, WARM_BYTES);
  warmPageCache(path.dirname(image), GiB);
  const s = await serveQcow2(which, image, warmImage);
  try {
    await work(s);
  } finally {
    await s.daemon.stop();
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
  execFileSync('qemu-img', ['check', '-q', image]);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-qcow2-export-');
  const daemons: Which[] = hasReference() ? ['qsd', 'qbd'] : ['qbd'];
  const results = new Map<string, Record<Which, number[]>>();
  const record = (name: string, which: Which, value: number) => {
    if (!results.has(name)) results.set(name, { qbd: [], qsd: [] });
    results.get(name)![which].push(value);
  };
  try {
    const source = path.join(dir, 'source.raw');
    const image = path.join(dir, 'disk.qcow2');
    const warmSource = path.join(dir, 'warm-source.raw');
    makeDataImage(source, GiB);
    makeDataImage(warmSource, WARM_BYTES);
    for (let r = 0; r < RUNS; r++) {
      for (const which of daemons) {
        await withExport(which, image, GiB, async (s) => {
          await run('nbdcopy', ['--flush', warmSource, s.warmUri]);
          await run('nbdcopy', [s.warmUri, 'null:']);
          record('nbdcopy sequential write into a fresh qcow2', which, GiB / (1 << 20) / (await timed(() => run('nbdcopy', ['--flush', source, s.uri]))));
          record('nbdcopy sequential read of it', which, GiB / (1 << 20) / (await timed(() => run('nbdcopy', ['--flush', s.uri, 'null:']))));
        });
        await withExport(which, image, 8 * GiB, async (s) => {
          await run('nbdcopy', ['--flush', warmSource, s.warmUri]);
          const res = await fioNbd(s.uri, 'randwrite', 1, 0, 8 * GiB, ALLOCATING_WRITES * 4096);
          record('fio 4k randwrite QD32, each write allocating, IOPS', which, res.iops);
        });
      }
    }
    const figures: Figure[] = [...results].map(([name, v]) => ({
      name,
      unit: name.endsWith('IOPS') ? 'IOPS' : 'MiB/s',
      qbd: median(v.qbd),
      qsd: v.qsd.length > 0 ? median(v.qsd) : undefined,
      lowerIsBetter: false,
    }));
    console.log('qcow2 through an NBD export');
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
