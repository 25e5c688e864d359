/**
 * NBD export benchmarks, qbd beside qemu-storage-daemon on the same 1 GiB
 * raw file in the same run: nbdcopy sequential read and write, and fio's
 * nbd engine doing 4 KiB random reads and writes at queue depth 32, on one
 * connection and on four (IOPS and p99 completion latency); then the same
 * over TLS (x509 certificates made with certtool, both daemons with
 * tls-creds-x509 and tls-authz): the sequential copies only, as fio's nbd
 * engine refuses URIs that name certificate files.
 * Run by hand: `npm run build && node dist/bench/nbd.js` (FIO_SECONDS=N to
 * change the length of each fio run, default 8).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, start, type Started } from './daemons';
import { printFigures, type Figure } from './report';
import { CLIENT_DN, makePki, type TestPki } from './pki';
import { run, makeDataImage, runMain } from './tools';

type Which = 'qbd' | 'qsd';

const SIZE = 1 << 30;
const FIO_SECONDS = Number(process.env.FIO_SECONDS) || 8;

interface Served {
  daemon: Started;
  uri: string;
}

async function serve(which: Which, image: string, pki?: TestPki): Promise<Served> {
  const dir = fs.mkdtempSync(path.join(path.dirname(image), `${which}-`));
  const sock = path.join(dir, 'nbd.sock');
  const tls = pki
    ? ['--object', `tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server`, '--object', `authz-simple,id=authz0,identity=${CLIENT_DN.replace(/,/g, ',,')}`]
    : [];
  const daemon = await start(which, [
    ...tls,
    '--blockdev', `driver=file,filename=${image},node-name=disk`,
    '--nbd-server', `addr.type=unix,addr.path=${sock}${pki ? ',tls-creds=tls0,tls-authz=authz0' : ''}`,
    '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
  ]);
  while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 5));
  return { daemon, uri: pki ? `nbds+unix:///disk?socket=${sock}&tls-certificates=${pki.clientDir}` : `nbd+unix:///disk?socket=${sock}` };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

interface FioResult {
  iops: number;
  p99us: number;
}

async function fio(uri: string, rw: 'randread' | 'randwrite', jobs: number): Promise<FioResult> {
  const out = await run('fio', [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bs=4k', '--iodepth=32',
    `--numjobs=${jobs}`, '--group_reporting', '--time_based', `--runtime=${FIO_SECONDS}`, '--ramp_time=1',
    `--size=${SIZE}`, '--output-format=json',
  ]);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = rw === 'randread' ? job.read : job.write;
  return { iops: side.iops, p99us: (side.clat_ns?.percentile?.['99.000000'] ?? 0) / 1000 };
}

async function measure(which: Which, image: string, source: string, pki?: TestPki): Promise<Map<string, number>> {
  const s = await serve(which, image, pki);
  const m = new Map<string, number>();
  const tag = pki ? 'TLS ' : '';
  try {
    const readS = await timed(() => run('nbdcopy', ['--flush', s.uri, 'null:']));
    m.set(`${tag}nbdcopy sequential read`, SIZE / (1 << 20) / readS);
    const writeS = await timed(() => run('nbdcopy', ['--flush', source, s.uri]));
    m.set(`${tag}nbdcopy sequential write`, SIZE / (1 << 20) / writeS);
    for (const jobs of pki ? [] : [1, 4]) {
      for (const rw of ['randread', 'randwrite'] as const) {
        const r = await fio(s.uri, rw, jobs);
        const label = `${tag}fio 4k ${rw} QD32 ×${jobs} conn`;
        m.set(`${label} IOPS`, r.iops);
        m.set(`${label} p99`, r.p99us);
      }
    }
  } finally {
    await s.daemon.stop();
  }
  return m;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync('/var/tmp/qbd-bench-nbd-');
  try {
    const image = path.join(dir, 'disk.raw');
    const source = path.join(dir, 'source.raw');
    makeDataImage(image, SIZE);
    makeDataImage(source, SIZE);
    const pki = makePki(path.join(dir, 'pki'));
    const ours = new Map([...(await measure('qbd', image, source)), ...(await measure('qbd', image, source, pki))]);
    const theirs = hasReference() ? new Map([...(await measure('qsd', image, source)), ...(await measure('qsd', image, source, pki))]) : undefined;
    const figures: Figure[] = [...ours].map(([name, qbd]) => {
      const lat = name.endsWith('p99');
      const f: Figure = { name, unit: lat ? 'µs' : name.includes('nbdcopy') ? 'MiB/s' : 'IOPS', qbd, lowerIsBetter: lat };
      const ref = theirs?.get(name);
      if (ref !== undefined) f.qsd = ref;
      return f;
    });
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
