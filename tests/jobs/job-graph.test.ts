/**
 * While each kind of job runs (and with a fleecing set-up of filters), the
 * graph answers queries as the reference's does: query-named-block-nodes (flat and with backing chains)
 * and the edges of x-debug-query-block-graph with their permissions.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { both, dirs, MiB, type Session } from '../helpers/job-session';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** base ← mid ← top (qcow2, overlapping data in each) and two raw images. */
function images(dir: string): Record<string, string> {
  const q = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
  q('qemu-img', 'create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(64 * MiB));
  q('qemu-io', '-c', 'write -P 3 0 32M', `${dir}/base.qcow2`);
  q('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', `${dir}/base.qcow2`, '-F', 'qcow2', `${dir}/mid.qcow2`);
  q('qemu-io', '-c', 'write -P 4 2M 32M', `${dir}/mid.qcow2`);
  q('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', `${dir}/mid.qcow2`, '-F', 'qcow2', `${dir}/top.qcow2`);
  q('qemu-io', '-c', 'write -P 5 4M 32M', `${dir}/top.qcow2`);
  q('qemu-img', 'create', '-q', '-f', 'raw', `${dir}/s.raw`, String(64 * MiB));
  q('qemu-io', '-f', 'raw', '-c', 'write -P 6 0 32M', `${dir}/s.raw`);
  q('qemu-img', 'create', '-q', '-f', 'raw', `${dir}/t.raw`, String(64 * MiB));
  return { s: `${dir}/s.raw`, t: `${dir}/t.raw` };
}

type Node = { 'node-name': string; drv: string; file: string; image: Record<string, unknown>; 'dirty-bitmaps'?: Array<{ name?: string }> };

/**
 * Node lists with automatic names and sizes masked (a file grows as the job
 * copies into it, as far as it got when asked). The reference also lists
 * the anonymous bitmaps its jobs keep on their nodes; qbd keeps those inside
 * the job, so they are left out here.
 */
function nodeList(list: Node[]): unknown {
  return JSON.parse(
    JSON.stringify(
      list.map((n) => {
        const named = n['dirty-bitmaps']?.filter((b) => b.name !== undefined);
        const image = n.drv === 'file' ? { ...n.image, 'virtual-size': 0 } : n.image;
        return { ...n, image, 'dirty-bitmaps': named?.length ? named : undefined };
      }),
    )
      .replace(/#block\d+/g, '#blockN')
      .replace(/"actual-size":\d+/g, '"actual-size":0'),
  );
}

/** Graph edges named by what the nodes are (`drv:file`), since automatic names differ. */
function edges(graph: any, list: Node[]): string[] {
  const label = new Map(list.map((n) => [n['node-name'], `${n.drv}:${path.basename(n.file)}`]));
  const names = new Map<number, string>(graph.nodes.map((n: any) => [n.id, label.get(n.name) ?? `${n.type}:${n.name}`]));
  return graph.edges
    .map((e: any) => `${names.get(e.parent)} -${e.name}-> ${names.get(e.child)} [${[...e.perm].sort()}] shares [${[...e['shared-perm']].sort()}]`)
    .sort();
}

const JOBS: Array<[string, (s: Session) => Promise<void>]> = [
  ['active commit', ({ c }) => c.cmd('block-commit', { 'job-id': 'j', device: 'top', speed: 1024 })],
  ['intermediate commit', ({ c, dir }) => c.cmd('block-commit', { 'job-id': 'j', device: 'top', top: `${dir}/mid.qcow2`, speed: 1024 })],
  ['stream', ({ c }) => c.cmd('block-stream', { 'job-id': 'j', device: 'top', speed: 1024 })],
  ['mirror', ({ c }) => c.cmd('blockdev-mirror', { 'job-id': 'j', device: 's', target: 't', sync: 'full', speed: 1024 })],
  ['backup', ({ c }) => c.cmd('blockdev-backup', { 'job-id': 'j', device: 's', target: 't', sync: 'full', speed: 1024 })],
  [
    'fleecing (no job)',
    async ({ c, dir }) => {
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${dir}/s.raw`, '-F', 'raw', `${dir}/tmp.qcow2`]);
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tmp', file: { driver: 'file', filename: `${dir}/tmp.qcow2` }, backing: 's' });
      await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 's', target: 'tmp' });
      await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw' });
    },
  ],
];

describe.skipIf(!haveTools)('the graph of a running job against qemu-storage-daemon 7.2', () => {
  for (const [name, start] of JOBS) {
    it(`${name}: node queries and graph edges as the reference shows them`, async () => {
      const seen: Record<string, unknown> = {};
      await both(images, async (s: Session) => {
        const { c, dir, daemon } = s;
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: `${dir}/top.qcow2` } });
        await start(s);
        const flat = (await c.cmd('query-named-block-nodes', { flat: true })) as Node[];
        const full = (await c.cmd('query-named-block-nodes')) as Node[];
        const graph = await c.cmd('x-debug-query-block-graph');
        if (((await c.cmd('query-jobs')) as unknown[]).length > 0) await c.cmd('block-job-cancel', { device: 'j', force: true });
        seen[daemon.flavour] = JSON.parse(JSON.stringify({ flat: nodeList(flat), full: nodeList(full), edges: edges(graph, full) }).split(dir).join('DIR'));
      });
      expect(seen.qbd).toEqual(seen.qsd);
    });
  }
});
