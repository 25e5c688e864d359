/**
 * block_resize of a node an NBD export uses: the export's user does not
 * share 'resize', so the resize is refused with the reference's permission
 * conflict, read-only or writable; once the export is gone it succeeds.
 * Also a block job's user, described as the reference describes it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

const MiB = 1 << 20;

async function sequence(flavour: 'qbd' | 'qsd'): Promise<Json[]> {
  const dir = tempDir(`qbd-resize-export-${flavour}-`);
  const d = await startDaemon(flavour, ['--nbd-server', `addr.type=unix,addr.path=${path.join(dir, 'nbd.sock')}`], { dir });
  const out: Json[] = [];
  try {
    const c = await d.client();
    const img = path.join(dir, 'a.raw');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 4 * MiB);
    await c.cmd('blockdev-add', { driver: 'file', 'node-name': 'f', filename: img });
    const resize = async (size: number) => out.push(await c.execute('block_resize', { 'node-name': 'f', size }));
    await c.cmd('block-export-add', { type: 'nbd', id: 'ro', 'node-name': 'f' });
    await resize(8 * MiB);
    await c.cmd('block-export-del', { id: 'ro' });
    await c.waitEvent('BLOCK_EXPORT_DELETED');
    await c.cmd('block-export-add', { type: 'nbd', id: 'rw', 'node-name': 'f', writable: true });
    await resize(8 * MiB);
    await c.cmd('block-export-del', { id: 'rw' });
    await c.waitEvent('BLOCK_EXPORT_DELETED');
    await resize(8 * MiB);
    out.push((await c.cmd('query-named-block-nodes')).find((n: Json) => n['node-name'] === 'f').image['virtual-size']);
    // A second user that does not share what the first one takes: named by job type and id.
    await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 't', size: 8 * MiB });
    await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'n', size: 8 * MiB });
    out.push(await c.execute('blockdev-mirror', { 'job-id': 'm', device: 'n', target: 't', sync: 'full', speed: 1 }));
    out.push(await c.execute('block-export-add', { type: 'nbd', id: 'w', 'node-name': 't', writable: true }));
    c.close();
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('block_resize of an exported node, beside qemu-storage-daemon', () => {
  it('is refused while an export uses the node, with the same permission conflict', async () => {
    const theirs = await sequence('qsd');
    const ours = await sequence('qbd');
    expect(ours).toEqual(theirs);
    expect(theirs[0].error.desc).toBe(
      "Permission conflict on node 'f': permissions 'resize' are both required by an unnamed block device (uses node 'f' as 'root' child) and unshared by an unnamed block device (uses node 'f' as 'root' child).",
    );
    expect(theirs[2]).toEqual({ return: {} });
  });
});
