/**
 * Image fleecing with a bitmap (`bitmap` of a user's copy-before-write
 * node): only the clusters the bitmap marks dirty when the node opens are
 * copied before a write, and only they can be read through snapshot-access;
 * the bad `bitmap` arguments fail with the reference's words. Each step is
 * run against qbd and qemu-storage-daemon and the outcomes compared.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Json } from '../helpers/compare';
import { toolAvailable } from '../helpers/tools';
import { both, qemuIo, type Session } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img');
const MiB = 1 << 20;

/** qemu-io on an export, its output with the socket path taken out (failures are outcomes here). */
function tryQemuIo(s: Session, exportName: string, cmd: string): string {
  const r = spawnSync('qemu-io', ['-f', 'raw', '-r', '-c', cmd, `nbd+unix:///${exportName}?socket=${s.nbd}`], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.split(s.nbd).join('SOCK').replace(/ops; .*$/gm, 'ops');
}

/** The allocation of the fleecing target's own layer: what was copied before write. */
function copiedExtents(file: string): Json {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '-U', '--output=json', file], { encoding: 'utf8' })) as Json[];
  return map.filter((e) => e.depth === 0 && e.data).map((e) => [e.start, e.length]);
}

async function fleeceWithBitmap(s: Session): Promise<Json> {
  const { c } = s;
  const src = path.join(s.work, 'src.raw');
  const tmp = path.join(s.work, 'tmp.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', src, String(4 * MiB)]);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', src], { stdio: 'pipe' });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src, '-F', 'raw', tmp]);
  await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
  await c.cmd('block-dirty-bitmap-add', { node: 'src', name: 'b0', granularity: 65536 });
  await c.cmd('block-export-add', { type: 'nbd', id: 'w', 'node-name': 'src', writable: true });
  qemuIo(s, 'src', 'write -P 0x22 1M 128k', 'write -P 0x22 3M 4k');
  await c.cmd('block-export-del', { id: 'w' });
  await c.waitEvent('BLOCK_EXPORT_DELETED');
  await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tmp', file: { driver: 'file', filename: tmp }, backing: 'src' });
  await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tmp', bitmap: { node: 'src', name: 'b0' } });
  // The node copied the bits: later changes to the user's bitmap do not move the point in time.
  await c.cmd('block-dirty-bitmap-clear', { node: 'src', name: 'b0' });
  await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw' });
  await c.cmd('block-export-add', { type: 'nbd', id: 'live', 'node-name': 'cbw', writable: true });
  await c.cmd('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece' });
  qemuIo(s, 'cbw', 'write -P 0x33 0 4M');
  const reads = {
    dirty: tryQemuIo(s, 'fleece', 'read -P 0x22 1M 128k'),
    dirtySmall: tryQemuIo(s, 'fleece', 'read -P 0x11 3149824 61440'),
    clean: tryQemuIo(s, 'fleece', 'read 0 64k'),
    straddling: tryQemuIo(s, 'fleece', 'read 1114112 131072'),
    live: tryQemuIo(s, 'cbw', 'read -P 0x33 0 4M'),
  };
  const bitmaps = (await c.cmd('query-named-block-nodes')).find((n: Json) => n['node-name'] === 'src')['dirty-bitmaps'];
  await c.cmd('block-export-del', { id: 'fleece' });
  await c.cmd('block-export-del', { id: 'live' });
  for (let i = 0; i < 2; i++) await c.waitEvent('BLOCK_EXPORT_DELETED');
  for (const n of ['fleece', 'cbw', 'tmp']) await c.cmd('blockdev-del', { 'node-name': n });
  // The reference's copy-before-write keeps its copy bitmap as an anonymous one on the source.
  return { reads, copied: copiedExtents(tmp), bitmaps: bitmaps.filter((b: Json) => b.name !== undefined) };
}

async function badBitmaps(s: Session): Promise<Json> {
  const { c } = s;
  await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'src', size: 4 * MiB });
  await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'tgt', size: 4 * MiB });
  await c.cmd('blockdev-add', { driver: 'null-co', 'node-name': 'small', size: MiB });
  await c.cmd('block-dirty-bitmap-add', { node: 'small', name: 's' });
  await c.cmd('block-dirty-bitmap-add', { node: 'src', name: 'b' });
  const add = (bitmap: Json) => c.execute('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tgt', bitmap });
  const out: Json = {
    noNode: await add({ node: 'nowhere', name: 'b' }),
    noBitmap: await add({ node: 'src', name: 'nothing' }),
    otherSize: await add({ node: 'small', name: 's' }),
  };
  // A bitmap an export uses is busy; the node may still copy it.
  await c.cmd('block-dirty-bitmap-disable', { node: 'src', name: 'b' });
  await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', bitmaps: ['b'] });
  out.busy = await add({ node: 'src', name: 'b' });
  out.nodes = (await c.cmd('query-named-block-nodes')).map((n: Json) => n['node-name']).sort();
  return out;
}

describe.skipIf(!haveTools)('copy-before-write with a bitmap, beside qemu-storage-daemon', () => {
  it('copies and shows only the clusters the bitmap marks dirty', async () => {
    const { ours, theirs } = await both(fleeceWithBitmap);
    expect(ours).toEqual(theirs);
    // The reference's outcome, spelled out: the dirty clusters read as they were, the others are refused.
    expect(theirs.reads.dirty).not.toMatch(/fail|mismatch/i);
    expect(theirs.reads.clean).toMatch(/read failed: Invalid argument/);
    expect(theirs.copied).toEqual([
      [MiB, 128 * 1024],
      [3 * MiB, 64 * 1024],
    ]);
  });

  it('refuses a missing node or bitmap and one of another size, with the reference words', async () => {
    const { ours, theirs } = await both(badBitmaps);
    expect(ours).toEqual(theirs);
    expect(theirs.noBitmap.error.desc).toBe("Dirty bitmap 'nothing' not found");
  });
});
