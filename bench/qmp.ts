/**
 * QMP benchmarks, qbd beside qemu-storage-daemon in the same run:
 * start-up to greeting, 5 000 sequential query-version round trips,
 * blockdev-add + blockdev-del of 1 000 null-co nodes, resident memory idle
 * and with 1 000 nodes. Run by hand: `npm run build && node dist/bench/qmp.js`.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BenchClient } from './qmp-client';
import { command, hasReference, rssMiB, start } from './daemons';
import { median, printFigures, type Figure } from './report';

type Which = 'qbd' | 'qsd';

/** Milliseconds from spawn to the greeting on the monitor socket. */
async function startupMs(which: Which): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-bench-start-'));
  const qmp = path.join(dir, 'qmp.sock');
  const [cmd, args] = command(which, ['--chardev', `socket,id=m,path=${qmp},server=on,wait=off`, '--monitor', 'chardev=m']);
  const t0 = process.hrtime.bigint();
  const proc = spawn(cmd, args, { stdio: 'ignore' });
  for (;;) {
    try {
      const c = await BenchClient.connect(qmp);
      c.close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
  fs.rmSync(dir, { recursive: true, force: true });
  return ms;
}

async function roundTripsMs(which: Which, n: number): Promise<number> {
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  await c.cmd('qmp_capabilities');
  for (let i = 0; i < 200; i++) await c.cmd('query-version');
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await c.cmd('query-version');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  c.close();
  await d.stop();
  return ms;
}

async function nodeChurn(which: Which, n: number): Promise<{ ms: number; idleMiB: number; loadedMiB: number }> {
  const d = await start(which);
  const c = await BenchClient.connect(d.qmp);
  await c.cmd('qmp_capabilities');
  await new Promise((r) => setTimeout(r, 300));
  const idleMiB = rssMiB(d.proc.pid!);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': `n${i}`, size: 1 << 30 });
  const loadedMiB = rssMiB(d.proc.pid!);
  for (let i = 0; i < n; i++) await c.cmd('blockdev-del', { 'node-name': `n${i}` });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  c.close();
  await d.stop();
  return { ms, idleMiB, loadedMiB };
}

async function main(): Promise<void> {
  const ref = hasReference();
  const both = async <T>(f: (w: Which) => Promise<T>): Promise<{ qbd: T; qsd?: T }> => ({ qbd: await f('qbd'), qsd: ref ? await f('qsd') : undefined });

  const starts = await both(async (w) => {
    const xs: number[] = [];
    for (let i = 0; i < 7; i++) xs.push(await startupMs(w));
    return median(xs);
  });
  const trips = await both((w) => roundTripsMs(w, 5000));
  const churn = await both((w) => nodeChurn(w, 1000));

  const figures: Figure[] = [
    { name: 'start-up to greeting (median of 7)', unit: 'ms', qbd: starts.qbd, qsd: starts.qsd, lowerIsBetter: true },
    { name: '5000 query-version round trips', unit: 'ms', qbd: trips.qbd, qsd: trips.qsd, lowerIsBetter: true },
    { name: 'add+del 1000 null-co nodes', unit: 'ms', qbd: churn.qbd.ms, qsd: churn.qsd?.ms, lowerIsBetter: true },
    { name: 'resident memory, idle', unit: 'MiB', qbd: churn.qbd.idleMiB, qsd: churn.qsd?.idleMiB, lowerIsBetter: true },
    { name: 'resident memory, 1000 nodes', unit: 'MiB', qbd: churn.qbd.loadedMiB, qsd: churn.qsd?.loadedMiB, lowerIsBetter: true },
  ];
  printFigures(figures);
}

void main();
