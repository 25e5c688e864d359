/**
 * Dirty bitmaps over NBD, qbd beside qemu-storage-daemon: block-export-add
 * `bitmaps` finds, refuses and holds bitmaps as the reference does, and
 * `nbdinfo --map=qemu:dirty-bitmap:NAME` shows the same extents after the
 * same writes.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { structuralDiff, type Json } from '../helpers/compare';
import { toolAvailable } from '../helpers/tools';
import { bitmapsByNode, both, qcow2Image, qemuIo, type Session } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img') && toolAvailable('nbdinfo');

function nbdinfo(s: Session, exportName: string, ...args: string[]): string {
  return execFileSync('nbdinfo', [...args, `nbd+unix:///${exportName}?socket=${s.nbd}`], { encoding: 'utf8' });
}

describe.skipIf(!haveTools)('dirty bitmaps in NBD exports', () => {
  it('offers bitmaps as meta contexts with the reference checks and the same extents', async () => {
    const { ours, theirs } = await both(async (s) => {
      const { c } = s;
      const file = qcow2Image(s, 'n.qcow2', '10M');
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: { driver: 'file', filename: file, 'node-name': 'nf' } });
      await c.cmd('block-dirty-bitmap-add', { node: 'n', name: 'b', granularity: 4096 });
      await c.cmd('block-dirty-bitmap-add', { node: 'n', name: 'd', disabled: true });
      await c.cmd('block-dirty-bitmap-add', { node: 'n', name: 'big', granularity: 1 << 20 });
      await c.cmd('block-dirty-bitmap-add', { node: 'nf', name: 'fb', disabled: true });
      const add = (args: Json) => c.execute('block-export-add', { type: 'nbd', 'node-name': 'n', ...args });
      const replies: Json[] = [
        await add({ id: 'x', bitmaps: ['zz'] }),
        await add({ id: 'x', bitmaps: ['b'] }),
        await add({ id: 'x', bitmaps: [{ node: 'zz', name: 'b' }] }),
        await add({ id: 'x', bitmaps: [{ node: 'n', name: 'zz' }] }),
        await add({ id: 'x', bitmaps: ['fb'] }),
        await add({ id: 'w', name: 'w', writable: true, bitmaps: ['d', { node: 'n', name: 'b' }, 'big'] }),
        await add({ id: 'r', name: 'r', bitmaps: ['d'] }),
      ];
      const held = await bitmapsByNode(c);
      replies.push(await c.execute('block-dirty-bitmap-remove', { node: 'n', name: 'd' }));
      replies.push(await c.execute('block-dirty-bitmap-clear', { node: 'n', name: 'b' }));
      qemuIo(s, 'w', 'write 100000 70000', 'write -z 5M 3k', 'write 10484000 760', 'write 7M 1');
      const maps: Json = {};
      for (const ctx of ['qemu:dirty-bitmap:b', 'qemu:dirty-bitmap:d', 'qemu:dirty-bitmap:big']) maps[ctx] = nbdinfo(s, 'w', `--map=${ctx}`);
      const contexts = nbdinfo(s, 'w', '--content', '--json');
      await c.cmd('block-export-del', { id: 'w' });
      await c.waitEvent('BLOCK_EXPORT_DELETED');
      return { replies, held, maps, contexts: JSON.parse(contexts).exports[0].contexts, after: await bitmapsByNode(c) };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.maps['qemu:dirty-bitmap:b']).toMatch(/dirty/);
  });
});
