/**
 * NBD client node benchmark: sequential read of 1 GiB through an nbd node
 * connected to qemu-nbd, re-exported by the daemon's own NBD server and
 * read by nbdcopy; qbd beside qemu-storage-daemon doing the same with its
 * nbd driver, in the same run on the same image.
 * Run by hand: `npm run build && node dist/bench/nbd-client.js`.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { hasReference, start } from './daemons';
import { median, printFigures, type Figure } from './report';
import { run, makeDataImage, runMain } from './tools';

type Which = 'qbd' | 'qsd';

const SIZE = 1 << 30;
const RUNS = Number(process.env.RUNS) || 3;

async function listening(sock: string): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ path: sock });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** MiB/s of nbdcopy reading the daemon's re-export of its nbd node, median of RUNS. */
async function measure(which: Which, serverSock: string, dir: string): Promise<number> {
  const sock = path.join(dir, `${which}-reexport.sock`);
  const daemon = await start(which, [
    '--blockdev', `driver=nbd,node-name=remote,server.type=unix,server.path=${serverSock},export=exp,read-only=on`,
    '--nbd-server', `addr.type=unix,addr.path=${sock}`,
    '--export', 'type=nbd,id=e0,node-name=remote,name=remote',
  ]);
  try {
    await listening(sock);
    const uri = `nbd+unix:///remote?socket=${sock}`;
    const rates: number[] = [];
    for (let i = 0; i < RUNS; i++) rates.push(SIZE / (1 << 20) / (await timed(() => run('nbdcopy', [uri, 'null:']))));
    return median(rates);
  } finally {
    await daemon.stop();
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-nbd-client-');
  const image = path.join(dir, 'disk.raw');
  const serverSock = path.join(dir, 'qemu-nbd.sock');
  makeDataImage(image, SIZE);
  // Several connections: qbd's and the reference's nodes are served side by side, one after the other.
  const server = spawn('qemu-nbd', ['-f', 'raw', '-x', 'exp', '-t', '-e', '4', '-r', '-k', serverSock, image], { stdio: 'ignore' });
  try {
    await listening(serverSock);
    const figure: Figure = { name: 'nbdcopy sequential read via nbd node', unit: 'MiB/s', qbd: await measure('qbd', serverSock, dir), lowerIsBetter: false };
    if (hasReference()) figure.qsd = await measure('qsd', serverSock, dir);
    printFigures([figure]);
  } finally {
    server.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
