/**
 * Shrinking qcow2 images with block_resize, qbd beside
 * qemu-storage-daemon: the same replies, the clusters past the new end
 * freed (the file cut after its last cluster in use, as long as the
 * reference's), refcounts consistent, internal snapshots untouched.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { check, qemuImg, qemuIo } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-shrink-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveTools)('qcow2 shrinking', () => {
  it('shrinks as the reference does: replies, data, file length, clean refcounts, snapshots intact', async () => {
    const results: Json[] = [];
    for (const flavour of ['qbd', 'qsd'] as const) {
      const img = path.join(dir, `sh-${flavour}.qcow2`);
      const snap = path.join(dir, `snap-${flavour}.qcow2`);
      // 512-byte clusters: several L2 tables, so whole tables go as well as parts of one.
      qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=512', img, '4M');
      qemuIo(img, 'write -P 1 0 4M');
      qemuImg('create', '-f', 'qcow2', snap, '4M');
      qemuIo(snap, 'write -P 2 0 3M');
      qemuImg('snapshot', '-c', 's1', snap);
      const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-shrink-${flavour}-`) });
      const replies: Json[] = [];
      try {
        const c = await d.client();
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'sh', file: { driver: 'file', filename: img } });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'sn', file: { driver: 'file', filename: snap } });
        for (const [node, size] of [
          ['sh', 1000000],
          ['sh', 3 * 1024 * 1024 + 512],
          ['sh', 1048576 + 4096],
          ['sn', 1048576],
        ] as const) {
          const r = await c.execute('block_resize', { 'node-name': node, size });
          replies.push(r.error ?? r.return);
        }
        const nodes = await c.cmd('query-named-block-nodes');
        replies.push(nodes.filter((n: Json) => n.drv === 'qcow2').map((n: Json) => [n['node-name'], n.image['virtual-size']]));
      } finally {
        await d.stop();
      }
      expect(check(img).status).toBe(0);
      expect(check(snap).status).toBe(0);
      // The snapshot still holds all it held: applied, it brings back its size and data.
      qemuImg('snapshot', '-a', 's1', snap);
      expect(qemuIo(snap, 'read -P 2 0 3M')).not.toMatch(/Pattern verification failed|failed/);
      expect(check(snap).status).toBe(0);
      results.push({ replies, size: fs.statSync(img).size });
    }
    expect(structuralDiff(normalise(results[0], dir), normalise(results[1], dir), '$', true)).toEqual([]);
    qemuImg('compare', path.join(dir, 'sh-qbd.qcow2'), path.join(dir, 'sh-qsd.qcow2'));
    qemuImg('compare', path.join(dir, 'snap-qbd.qcow2'), path.join(dir, 'snap-qsd.qcow2'));
  });
});
