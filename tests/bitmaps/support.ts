/** Helpers of the dirty bitmap tests: a daemon of each flavour, qemu-io through an export, bitmap queries. */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Json } from '../helpers/compare';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';

export type Session = { c: QmpTestClient; d: RunningDaemon; work: string; nbd: string };

/** Runs `steps` against a fresh daemon of each flavour, each with its own images and NBD socket. */
export async function both(steps: (s: Session) => Promise<Json>): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    const work = tempDir(`qbd-bitmaps-${flavour}-`);
    const nbd = path.join(work, 'nbd.sock');
    const d = await startDaemon(flavour, ['--nbd-server', `addr.type=unix,addr.path=${nbd}`], { dir: work });
    try {
      const c = await d.client();
      out.push(await steps({ c, d, work, nbd }));
      c.close();
    } finally {
      await d.stop();
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  return { ours: out[0], theirs: out[1] };
}

/** Runs qemu-io commands on an export. */
export function qemuIo(s: Session, exportName: string, ...cmds: string[]): void {
  execFileSync('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), `nbd+unix:///${exportName}?socket=${s.nbd}`], { stdio: 'pipe' });
}

/** The dirty-bitmaps member of every node that has one, by node name. */
export async function bitmapsByNode(c: QmpTestClient): Promise<Json> {
  const out: Json = {};
  for (const n of await c.cmd('query-named-block-nodes')) if (n['dirty-bitmaps']) out[n['node-name']] = n['dirty-bitmaps'];
  return out;
}

export async function hashes(c: QmpTestClient, pairs: Array<[string, string]>): Promise<Json> {
  const out: Json = {};
  for (const [node, name] of pairs) out[`${node}/${name}`] = await c.execute('x-debug-block-dirty-bitmap-sha256', { node, name });
  return out;
}

export function rawImage(s: Session, name: string, size: number): string {
  const f = path.join(s.work, name);
  fs.writeFileSync(f, '');
  fs.truncateSync(f, size);
  return f;
}

export function qcow2Image(s: Session, name: string, size: string, cluster = '65536'): string {
  const f = path.join(s.work, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cluster}`, f, size]);
  return f;
}

export interface Restarts {
  /** Images live here, across daemons. */
  readonly work: string;
  readonly flavour: 'qbd' | 'qsd';
  /** Starts a daemon of the flavour (stopped by the caller, or at the end). */
  start(): Promise<Session>;
}

/** Like `both`, for steps that start, stop and kill daemons over the same images. */
export async function bothWithRestarts(steps: (r: Restarts) => Promise<Json>): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    const work = tempDir(`qbd-bitmaps-${flavour}-`);
    const started: RunningDaemon[] = [];
    try {
      out.push(
        await steps({
          work,
          flavour,
          async start() {
            const dir = tempDir(`qbd-bitmaps-run-`);
            const nbd = path.join(dir, 'nbd.sock');
            const d = await startDaemon(flavour, ['--nbd-server', `addr.type=unix,addr.path=${nbd}`], { dir });
            started.push(d);
            return { c: await d.client(), d, work, nbd };
          },
        }),
      );
    } finally {
      for (const d of started) {
        await d.stop();
        fs.rmSync(d.dir, { recursive: true, force: true });
      }
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
  return { ours: out[0], theirs: out[1] };
}

/** `qemu-img info` as JSON, without what depends on the host's allocation. */
export function imageInfo(file: string, shared = false): Json {
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', ...(shared ? ['-U'] : []), file], { encoding: 'utf8' }));
  delete info['actual-size'];
  delete info.filename;
  return info;
}

/** `qemu-img check` as JSON, without what depends on where clusters were put. */
export function checkImage(file: string): Json {
  let text: string;
  try {
    text = execFileSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
  } catch (err) {
    text = String((err as { stdout?: string }).stdout);
  }
  const report = JSON.parse(text);
  delete report['image-end-offset'];
  delete report['allocated-clusters'];
  delete report['fragmented-clusters'];
  delete report.filename;
  return report;
}
