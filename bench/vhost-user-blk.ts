/**
 * vhost-user-blk export benchmarks, qbd beside qemu-storage-daemon on the
 * same 1 GiB raw file in the same run.
 *
 * Front-end: the tests' vhost-user front-end (no VM) drives the export's
 * queue directly: sequential 128 KiB reads and writes over the whole disk
 * at queue depth 8 (MiB/s), and 4 KiB random reads and writes at queue
 * depth 32 (IOPS). This measures the back-end's own cost per request.
 *
 * Guest: when qemu-system-x86_64, a kernel in /boot and busybox are there,
 * a Linux guest (TCG, so the guest's CPU is slow and bounds every figure)
 * copies 256 MiB with dd and O_DIRECT in 1 MiB and 4 KiB blocks.
 *
 * Run by hand: `npm run build && node dist/bench/vhost-user-blk.js`
 * (SECONDS_PER_RUN=N for the random runs, default 5).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, onPath, start, type Started } from './daemons';
import { median, printFigures, type Figure } from './report';
import { makeDataImage, runMain, warmPageCache } from './tools';
import * as P from '../src/exports/vhost-user-blk/protocol';
import { BlockFrontend } from './vhost-user-frontend';
import { bootWithVhostUserBlk, busyboxPath, hostKernel, writeInitramfs } from './vm';

type Which = 'qbd' | 'qsd';

const SIZE = 1 << 30;
const SECONDS_PER_RUN = Number(process.env.SECONDS_PER_RUN) || 5;
const SEQ_BLOCK = 128 * 1024;
const SEQ_DEPTH = 8;
const RANDOM_DEPTH = 32;
const SECTORS = SIZE / P.SECTOR;
/** Timed sequential passes; the figure is their median. */
const SEQ_RUNS = 3;

async function serve(which: Which, image: string): Promise<{ daemon: Started; sock: string }> {
  const dir = path.dirname(image);
  const sock = path.join(dir, `${which}-vu.sock`);
  const daemon = await start(which, ['--blockdev', `file,filename=${image},node-name=f`, '--blockdev', 'raw,file=f,node-name=n', '--export', `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},writable=on`]);
  return { daemon, sock };
}

/**
 * Keeps `depth` requests in flight, each made by `next` in its own slot,
 * until `more` says stop; answers requests completed and seconds taken.
 */
async function drive(f: BlockFrontend, depth: number, next: (slot: number, n: number) => { type: number; sector: bigint; data: Buffer | number } | undefined): Promise<{ done: number; seconds: number }> {
  const q = f.queues[0];
  let issued = 0;
  let inFlight = 0;
  const submit = (slot: number): void => {
    const r = next(slot, issued);
    if (!r) return;
    issued++;
    inFlight++;
    f.submit(r.type, r.sector, r.data, { slot });
  };
  const t0 = process.hrtime.bigint();
  for (let slot = 0; slot < depth; slot++) submit(slot);
  let done = 0;
  while (inFlight > 0) {
    const used = await f.nextUsed(q);
    inFlight--;
    done++;
    submit(used.id / 3);
  }
  return { done, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

async function frontendFigures(which: Which, image: string): Promise<Record<string, number>> {
  const { daemon, sock } = await serve(which, image);
  try {
    const f = await BlockFrontend.open(sock, { queueSize: 128, memSize: 64 << 20, slotSize: 0x40000 });
    try {
      const out: Record<string, number> = {};
      const payload = Buffer.alloc(SEQ_BLOCK, 0x3c);
      for (const [name, type] of [
        ['seq read', P.BLK_T.IN],
        ['seq write', P.BLK_T.OUT],
      ] as const) {
        const rates: number[] = [];
        for (let run = 0; run < SEQ_RUNS; run++) {
          const r = await drive(f, SEQ_DEPTH, (_slot, n) => (n * SEQ_BLOCK < SIZE ? { type, sector: BigInt((n * SEQ_BLOCK) / P.SECTOR), data: type === P.BLK_T.IN ? SEQ_BLOCK : payload } : undefined));
          rates.push((r.done * SEQ_BLOCK) / r.seconds / (1 << 20));
        }
        out[name] = median(rates);
      }
      const block = Buffer.alloc(4096, 0x5d);
      for (const [name, type] of [
        ['4k randread', P.BLK_T.IN],
        ['4k randwrite', P.BLK_T.OUT],
      ] as const) {
        const deadline = process.hrtime.bigint() + BigInt(SECONDS_PER_RUN * 1e9);
        const r = await drive(f, RANDOM_DEPTH, () => (process.hrtime.bigint() < deadline ? { type, sector: BigInt(Math.floor(Math.random() * (SECTORS / 8)) * 8), data: type === P.BLK_T.IN ? 4096 : block } : undefined));
        out[name] = r.done / r.seconds;
      }
      return out;
    } finally {
      f.close();
    }
  } finally {
    await daemon.stop();
  }
}

function guestAvailable(): boolean {
  return onPath('qemu-system-x86_64') && hostKernel() !== undefined && busyboxPath() !== undefined;
}

/** Seconds the guest took for each dd, read from /proc/uptime around it. */
async function guestFigures(which: Which, image: string): Promise<Record<string, number>> {
  const dir = path.dirname(image);
  const runs: Array<[string, string, number]> = [
    ['guest 1M read', 'dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct', 256],
    ['guest 1M write', 'dd if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct', 256],
    ['guest 4k read', 'dd if=/dev/vda of=/dev/null bs=4k count=8192 iflag=direct', 32],
    ['guest 4k write', 'dd if=/dev/zero of=/dev/vda bs=4k count=8192 oflag=direct', 32],
  ];
  const script = runs.map(([name, cmd]) => `a=$(cut -d' ' -f1 /proc/uptime); ${cmd} 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo "QBDBENCH ${name} $a $b"`).join('\n');
  const initramfs = path.join(dir, 'bench-initramfs.cpio');
  const kernel = hostKernel()!;
  writeInitramfs(initramfs, kernel.modules, script);
  const { daemon, sock } = await serve(which, image);
  try {
    const console = await bootWithVhostUserBlk(kernel.image, initramfs, sock);
    const out: Record<string, number> = {};
    for (const [name, , mib] of runs) {
      const m = new RegExp(`QBDBENCH ${name} ([\\d.]+) ([\\d.]+)`).exec(console);
      if (!m) throw new Error(`guest did not report ${name}:\n${console}`);
      out[name] = mib / Math.max(0.01, Number(m[2]) - Number(m[1]));
    }
    return out;
  } finally {
    await daemon.stop();
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'qbd-bench-vublk-'));
  const image = path.join(dir, 'disk.raw');
  makeDataImage(image, SIZE);
  const flavours: Which[] = hasReference() ? ['qbd', 'qsd'] : ['qbd'];
  const results: Record<Which, Record<string, number>> = { qbd: {}, qsd: {} };
  try {
    for (const which of flavours) {
      warmPageCache(dir, SIZE);
      Object.assign(results[which], await frontendFigures(which, image));
    }
    if (guestAvailable()) for (const which of flavours) Object.assign(results[which], await guestFigures(which, image));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const figures: Figure[] = Object.keys(results.qbd).map((name) => ({
    name,
    unit: name.startsWith('4k rand') ? 'IOPS' : 'MiB/s',
    qbd: results.qbd[name]!,
    qsd: results.qsd[name],
    lowerIsBetter: false,
  }));
  printFigures(figures);
}

runMain(main);
