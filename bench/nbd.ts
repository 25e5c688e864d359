/**
 * NBD export benchmarks, qbd beside qemu-storage-daemon on the same 1 GiB
 * raw file in the same run, and beside nbdkit's file plugin when nbdkit is
 * installed: nbdcopy sequential read and write, and fio's
 * nbd engine doing 4 KiB random reads and writes at queue depth 32, on one
 * connection and on four (IOPS and p99 completion latency); then the same
 * over TLS (x509 certificates made with certtool, both daemons with
 * tls-creds-x509 and tls-authz): the sequential copies only, as fio's nbd
 * engine refuses URIs that name certificate files.
 * Each nbdcopy figure is the median of three timed copies after an untimed
 * one. Run by hand: `npm run build && node dist/bench/nbd.js` (FIO_SECONDS=N
 * to change the length of each fio run, default 8).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hasReference, onPath, spawnServer, start, type Started } from './daemons';
import { median, printFigures, type Figure } from './report';
import { CLIENT_DN, makePki, type TestPki } from './pki';
import { fioNbd, makeDataImage, run, runMain, timed } from './tools';

type Which = 'qbd' | 'qsd' | 'nbdkit';

const SIZE = 1 << 30;
const FIO_SECONDS = Number(process.env.FIO_SECONDS) || 8;
/** Timed nbdcopy runs of each direction; the figure is their median. */
const COPY_RUNS = 3;

interface Served {
  daemon: Started;
  uri: string;
}

/** nbdkit's file plugin on the same file; over TLS it checks the client's certificate (it has no authz by name). */
function startNbdkit(dir: string, image: string, sock: string, pki?: TestPki): Promise<Started> {
  const pidfile = path.join(dir, 'pid');
  const tls = pki ? ['--tls=require', `--tls-certificates=${pki.serverDir}`, '--tls-verify-peer'] : [];
  return spawnServer('nbdkit', ['--foreground', '--exit-with-parent', '-P', pidfile, '-U', sock, ...tls, 'file', `file=${image}`], dir, pidfile);
}

async function serve(which: Which, image: string, pki?: TestPki): Promise<Served> {
  const dir = fs.mkdtempSync(path.join(path.dirname(image), `${which}-`));
  const sock = path.join(dir, 'nbd.sock');
  const uri = pki ? `nbds+unix:///disk?socket=${sock}&tls-certificates=${pki.clientDir}` : `nbd+unix:///disk?socket=${sock}`;
  if (which === 'nbdkit') return { daemon: await startNbdkit(dir, image, sock, pki), uri };
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
  return { daemon, uri };
}

async function measure(which: Which, image: string, source: string, pki?: TestPki): Promise<Map<string, number>> {
  const s = await serve(which, image, pki);
  const m = new Map<string, number>();
  const tag = pki ? 'TLS ' : '';
  try {
    const copies: Array<[string, string[]]> = [
      ['read', ['--flush', s.uri, 'null:']],
      ['write', ['--flush', source, s.uri]],
    ];
    for (const [what, args] of copies) {
      // One untimed pass first: a 1 GiB copy takes about a second, and a first pass would time qbd's JIT warm-up and first-touch buffer pages as much as the copy.
      await run('nbdcopy', args);
      const times: number[] = [];
      for (let i = 0; i < COPY_RUNS; i++) times.push(await timed(() => run('nbdcopy', args)));
      m.set(`${tag}nbdcopy sequential ${what}`, SIZE / (1 << 20) / median(times));
    }
    for (const jobs of pki ? [] : [1, 4]) {
      for (const rw of ['randread', 'randwrite'] as const) {
        const r = await fioNbd(s.uri, rw, jobs, FIO_SECONDS, SIZE);
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
    const measureAll = async (which: Which) => new Map([...(await measure(which, image, source)), ...(await measure(which, image, source, pki))]);
    const ours = await measureAll('qbd');
    const theirs = hasReference() ? await measureAll('qsd') : undefined;
    const nbdkit = onPath('nbdkit') ? await measureAll('nbdkit') : undefined;
    const figures: Figure[] = [...ours].map(([name, qbd]) => {
      const lat = name.endsWith('p99');
      const f: Figure = { name, unit: lat ? 'µs' : name.includes('nbdcopy') ? 'MiB/s' : 'IOPS', qbd, lowerIsBetter: lat };
      const ref = theirs?.get(name);
      if (ref !== undefined) f.qsd = ref;
      const kit = nbdkit?.get(name);
      if (kit !== undefined) f.others = { nbdkit: kit };
      return f;
    });
    printFigures(figures);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runMain(main);
