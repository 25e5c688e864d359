/**
 * qcow2 over QMP, qbd beside qemu-storage-daemon: the same blockdev-add of a
 * backing chain gives the same query-named-block-nodes entries, the same
 * errors for images either must refuse, and blockdev-create makes an image
 * both open.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { qemuImg, qemuIo } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-storage-daemon');

let dir: string;
const daemons: RunningDaemon[] = [];
beforeAll(() => {
  dir = tempDir('qbd-qcow2-qmp-');
});
afterAll(async () => {
  for (const d of daemons) await d.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs `steps` against a fresh daemon of each flavour; returns their replies, normalised. */
async function both(steps: (c: Awaited<ReturnType<RunningDaemon['client']>>) => Promise<Json>): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-qcow2-${flavour}-`) });
    daemons.push(d);
    const c = await d.client();
    out.push(normalise(await steps(c), dir));
    await d.stop();
  }
  return { ours: out[0], theirs: out[1] };
}

describe.skipIf(!haveTools)('qcow2 over QMP, beside qemu-storage-daemon', () => {
  it('lists a qcow2 chain in query-named-block-nodes as the reference does', async () => {
    const base = path.join(dir, 'base.qcow2');
    const top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', base, '1M');
    qemuIo(base, 'write -P 1 0 64k');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', '-o', 'refcount_bits=8', top, '2M');
    const { ours, theirs } = await both(async (c) => {
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: top } });
      // The qcow2 nodes; the file nodes below them are the file driver's business.
      const nodes = (await c.cmd('query-named-block-nodes')).filter((n: Json) => n.drv === 'qcow2');
      nodes.sort((a: Json, b: Json) => String(a.file).localeCompare(String(b.file)));
      // Sizes on disk depend on the file system's allocation, not on the daemon.
      for (const n of nodes) {
        for (let img = n.image; img; img = img['backing-image']) delete img['actual-size'];
      }
      return nodes;
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('lists internal snapshots of v2 and v3 images as the reference does', async () => {
    const v3 = path.join(dir, 'snap-v3.qcow2');
    const v2 = path.join(dir, 'snap-v2.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', v2, '1M');
    qemuImg('create', '-f', 'qcow2', '-b', v2, '-F', 'qcow2', v3, '1M');
    for (const [img, names] of [
      [v2, ['old']],
      [v3, ['first', 'a name of some length to push entries past their minimal size', 'third']],
    ] as const) {
      for (const [i, name] of names.entries()) {
        qemuIo(img, `write -P ${i + 1} ${i * 64}k 64k`);
        qemuImg('snapshot', '-c', name, img);
      }
    }
    const { ours, theirs } = await both(async (c) => {
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', 'read-only': true, file: { driver: 'file', filename: v3 } });
      return (await c.cmd('query-named-block-nodes')).filter((n: Json) => n.drv === 'qcow2').map((n: Json) => n.image);
    });
    expect(JSON.stringify(ours)).toContain('a name of some length');
    expect(JSON.stringify(ours)).toContain('"old"');
    for (const list of [ours, theirs]) {
      for (const top of list as Json[]) for (let img = top; img; img = img['backing-image']) delete img['actual-size'];
    }
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('lists the nodes of an implicitly opened chain in the reference order, and graphs them alike', async () => {
    const b1 = path.join(dir, 'order1.qcow2');
    const b2 = path.join(dir, 'order2.qcow2');
    const b3 = path.join(dir, 'order3.qcow2');
    qemuImg('create', '-f', 'qcow2', b1, '1M');
    qemuImg('create', '-f', 'qcow2', '-b', b1, '-F', 'qcow2', b2);
    qemuImg('create', '-f', 'qcow2', '-b', b2, '-F', 'qcow2', b3);
    const { ours, theirs } = await both(async (c) => {
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: b3 } });
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', 'read-only': true, file: { driver: 'file', 'node-name': 'rf', filename: b1 } });
      const order = (await c.cmd('query-named-block-nodes')).map((n: Json) => [n['node-name'], n.drv, n.file]);
      return { order, graph: await c.cmd('x-debug-query-block-graph') };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('refuses a corrupt image read-write and unknown features with the reference errors', async () => {
    const corrupt = path.join(dir, 'corrupt.qcow2');
    qemuImg('create', '-f', 'qcow2', corrupt, '1M');
    const fd = fs.openSync(corrupt, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(2n);
    fs.writeSync(fd, b, 0, 8, 72);
    fs.closeSync(fd);
    const notQcow = path.join(dir, 'plain.raw');
    fs.writeFileSync(notQcow, Buffer.alloc(65536));
    const { ours, theirs } = await both(async (c) => [
      await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'c', file: { driver: 'file', filename: corrupt } }),
      await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'p', file: { driver: 'file', filename: notQcow } }),
    ]);
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('creates a qcow2 image with blockdev-create that both daemons open alike', async () => {
    const { ours, theirs } = await both(async (c) => {
      const img = path.join(dir, `created-${Date.now()}-${Math.random()}.qcow2`);
      fs.writeFileSync(img, '');
      await c.cmd('blockdev-add', { driver: 'file', 'node-name': 'f', filename: img });
      await c.cmd('blockdev-create', { 'job-id': 'j', options: { driver: 'qcow2', file: 'f', size: 4 << 20, 'cluster-size': 65536 } });
      for (;;) {
        const ev = await c.waitEvent('JOB_STATUS_CHANGE');
        if (ev.data.status === 'concluded') break;
      }
      const jobs = await c.cmd('query-jobs');
      await c.cmd('job-dismiss', { id: 'j' });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: 'f' });
      const nodes = await c.cmd('query-named-block-nodes');
      const q = nodes.find((n: Json) => n['node-name'] === 'q');
      delete q.image['actual-size'];
      // The file name differs per daemon (each made its own image).
      q.file = q.image.filename = '$IMG';
      const check = qemuImg('check', '--output=json', '-U', img);
      return { jobs, q, check: JSON.parse(check)['check-errors'] };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });
});
