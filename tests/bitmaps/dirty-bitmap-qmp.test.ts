/**
 * Dirty bitmaps over QMP, qbd beside qemu-storage-daemon: the same commands
 * and the same writes (qemu-io through an NBD export, a backup job into a
 * target) give the same replies, errors, query-named-block-nodes entries
 * and x-debug-block-dirty-bitmap-sha256 hashes.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { structuralDiff, type Json } from '../helpers/compare';
import { toolAvailable } from '../helpers/tools';
import { bitmapsByNode, both, hashes, qcow2Image, qemuIo, rawImage } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img');

describe.skipIf(!haveTools)('dirty bitmaps beside qemu-storage-daemon', () => {
  it('answers the commands with the reference replies and errors', async () => {
    const { ours, theirs } = await both(async (s) => {
      const { c } = s;
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: qcow2Image(s, 'a.qcow2', '10M', '4096'), 'node-name': 'qf' } });
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: rawImage(s, 'r.raw', 10_000_000), 'node-name': 'rf' } });
      const replies: Json[] = [];
      const run = async (cmd: string, args: Json) => replies.push([cmd, args.name ?? args.target, await c.execute(cmd, args)]);
      await run('block-dirty-bitmap-add', { node: 'q', name: 'b1' });
      await run('block-dirty-bitmap-add', { node: 'r', name: 'b1' });
      await run('block-dirty-bitmap-add', { node: 'rf', name: 'b2', granularity: 512, disabled: true });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'b1' });
      await run('block-dirty-bitmap-add', { node: 'q', name: '' });
      await run('block-dirty-bitmap-add', { node: 'nope', name: 'x' });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'g', granularity: 1000 });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'g', granularity: 256 });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'g', granularity: 2 ** 31 });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'x'.repeat(1024) });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'y'.repeat(1023) });
      await run('block-dirty-bitmap-add', { node: 'r', name: 'p', persistent: true });
      await run('block-dirty-bitmap-add', { node: 'q', name: 'p'.repeat(1024), persistent: true });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'huge', file: { driver: 'file', filename: qcow2Image(s, 'huge.qcow2', '4T') } });
      await run('block-dirty-bitmap-add', { node: 'huge', name: 'fine', persistent: true, granularity: 512 });
      await run('block-dirty-bitmap-remove', { node: 'q', name: 'zz' });
      await run('block-dirty-bitmap-remove', { node: 'zz', name: 'zz' });
      await run('block-dirty-bitmap-clear', { node: 'q', name: 'zz' });
      await run('block-dirty-bitmap-enable', { node: 'zz', name: 'b1' });
      await run('block-dirty-bitmap-disable', { node: 'q', name: 'zz' });
      await run('block-dirty-bitmap-merge', { node: 'q', target: 'b1', bitmaps: ['zz'] });
      await run('block-dirty-bitmap-merge', { node: 'q', target: 'b1', bitmaps: [{ node: 'r', name: 'b1' }] });
      await run('block-dirty-bitmap-merge', { node: 'q', target: 'b1', bitmaps: [{ node: 'rx', name: 'b2' }] });
      await run('block-dirty-bitmap-merge', { node: 'q', target: 'zz', bitmaps: ['b1'] });
      await run('block-dirty-bitmap-merge', { node: 'q', target: 'b1', bitmaps: ['g', 'b1'] });
      await run('block-dirty-bitmap-remove', { node: 'q', name: 'g' });
      await run('x-debug-block-dirty-bitmap-sha256', { node: 'zz', name: 'b1' });
      return { replies, bitmaps: await bitmapsByNode(c), hashes: await hashes(c, [['q', 'b1'], ['rf', 'b2']]) };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('records writes, zeroes and discards from an NBD client, as the reference does', async () => {
    const { ours, theirs } = await both(async (s) => {
      const { c } = s;
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', discard: 'unmap', file: { driver: 'file', filename: rawImage(s, 'r.raw', 10_000_000), 'node-name': 'rf', discard: 'unmap' } });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: qcow2Image(s, 'q.qcow2', '8M', '4096'), 'node-name': 'qf' } });
      await c.cmd('block-dirty-bitmap-add', { node: 'r', name: 'b64k' });
      await c.cmd('block-dirty-bitmap-add', { node: 'r', name: 'b512', granularity: 512 });
      await c.cmd('block-dirty-bitmap-add', { node: 'r', name: 'off', disabled: true });
      await c.cmd('block-dirty-bitmap-add', { node: 'rf', name: 'file', granularity: 4096 });
      await c.cmd('block-dirty-bitmap-add', { node: 'q', name: 'q' });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'r', writable: true });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'q', writable: true });
      qemuIo(s, 'r', 'write 0 1', 'write 70000 4096', 'write 9999999 1', 'write -z 1048576 65536', 'discard 3145728 131072', 'discard 5000000 1000');
      const first = { bitmaps: await bitmapsByNode(c), hashes: await hashes(c, [['r', 'b64k'], ['r', 'b512'], ['r', 'off'], ['rf', 'file']]) };
      // Enabled again, the bitmap records from then on; a clear forgets what was recorded.
      await c.cmd('block-dirty-bitmap-enable', { node: 'r', name: 'off' });
      await c.cmd('block-dirty-bitmap-disable', { node: 'r', name: 'b512' });
      await c.cmd('block-dirty-bitmap-clear', { node: 'rf', name: 'file' });
      qemuIo(s, 'r', 'write 2000000 100000', 'write -z 7000000 3000');
      qemuIo(s, 'q', 'write 0 4096', 'write 12345 70000', 'write -z 6M 1M');
      const second = { bitmaps: await bitmapsByNode(c), hashes: await hashes(c, [['r', 'b64k'], ['r', 'b512'], ['r', 'off'], ['rf', 'file'], ['q', 'q']]) };
      // Merges across granularities and nodes of the same size.
      await c.cmd('block-dirty-bitmap-merge', { node: 'r', target: 'b512', bitmaps: ['off', { node: 'rf', name: 'file' }] });
      await c.cmd('block-dirty-bitmap-merge', { node: 'r', target: 'b64k', bitmaps: ['b512'] });
      const merged = { bitmaps: await bitmapsByNode(c), hashes: await hashes(c, [['r', 'b64k'], ['r', 'b512']]) };
      return { first, second, merged };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    // Not a comparison of two empty answers: the writes were recorded.
    expect(ours.first.bitmaps.r.find((b: Json) => b.name === 'b64k').count).toBeGreaterThan(0);
  });

  it('marks the bitmaps of a job target with what the job writes', async () => {
    const { ours, theirs } = await both(async (s) => {
      const { c } = s;
      const src = rawImage(s, 'src.raw', 4 << 20);
      // Data everywhere: how each daemon's backup treats zero areas is not what this test is about.
      execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 4M', src], { stdio: 'pipe' });
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: qcow2Image(s, 't.qcow2', '4M') } });
      await c.cmd('block-dirty-bitmap-add', { node: 'tgt', name: 't', granularity: 4096 });
      await c.cmd('blockdev-backup', { 'job-id': 'j', device: 'src', target: 'tgt', sync: 'full' });
      await c.waitEvent('BLOCK_JOB_COMPLETED');
      return { bitmaps: (await bitmapsByNode(c)).tgt, hashes: await hashes(c, [['tgt', 't']]) };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.bitmaps[0].count).toBeGreaterThan(0);
  });
});
