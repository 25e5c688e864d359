/**
 * copy-before-write, GS half: the filter a backup job inserts above its
 * source (`file`) with the backup target as `target`, or that a user adds
 * with blockdev-add for image fleecing (then its I/O half does the copying). Before a write
 * reaches the source, the old data of the clusters it touches is copied to
 * the target, so the target keeps the source as it was when the job began.
 * For a job's filter the copying sits on the source's write path in the I/O
 * layer (the job's run half); the node carries the graph edges and permissions.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { nodeFilename } from '../../global-state/node-info';
import type { BlockNode } from '../../global-state/block-node';
import { findNode } from '../../global-state/graph';
import { PERM } from '../../common/permissions';
import { QmpError } from '../../../qmp/errors';
import { SharedDirtyBitmap, type SharedDirtyBitmapState } from '../../common/shared-dirty-bitmap';
import { CHECK_ALLOW_RO, checkBitmap, lookupBitmap, type BdrvDirtyBitmap } from '../../global-state/dirty-bitmaps';
import { CBW_CLUSTER_SIZE, type CbwState, type CbwUserState } from './common';

/**
 * Users that are not nodes (exports) stay on the source rather than move
 * above the filter; their writes pass the job's copy-before-write on the
 * source's write path, so the filter lets them write.
 */
function keepsWriters(node: BlockNode): boolean {
  const name = node.options.file;
  const source = typeof name === 'string' ? findNode(name) : undefined;
  return !!source?.parents.some((e) => e.parent.kind === 'backend' && e.parent.graphType !== 'block-job' && e.perm & PERM.WRITE);
}

/**
 * The bitmap's dirty clusters at the copy granularity, as QEMU merges a
 * `bitmap` into its copy bitmap: the node's copy, so later writes and QMP
 * changes to the user's bitmap do not move the point in time.
 */
function copyOfBitmap(bitmap: BdrvDirtyBitmap, length: number): SharedDirtyBitmapState {
  const fail = (why: string): never => {
    throw QmpError.generic(`Cannot create block-copy-state: Failed to merge bitmap '${bitmap.name}' to internal copy-bitmap: ${why}`);
  };
  try {
    checkBitmap(bitmap, CHECK_ALLOW_RO);
  } catch (err) {
    fail((err as Error).message);
  }
  if (bitmap.size !== length) fail(`Bitmaps are of different sizes (destination size is ${length}, source size is ${bitmap.size}) and can't be merged`);
  const copy = SharedDirtyBitmap.create(length, CBW_CLUSTER_SIZE, false);
  copy.merge(bitmap.bits);
  return copy.state;
}

export const copyBeforeWriteGs: GsDriver<CbwState> = {
  descriptor: { name: 'copy-before-write', kind: 'filter' },
  strongOptions: [],

  /** A user's node (image fleecing): from here on, `target` keeps `file` as it is now. */
  async open(ctx, options) {
    const file = (await ctx.openChild('file', 'file', true))!;
    const target = (await ctx.openChild('target', 'target', true))!;
    const ref = options.bitmap as { node: string; name: string } | undefined;
    const bitmap = ref ? lookupBitmap(ref.node, ref.name) : undefined;
    if (target.length < file.length) throw QmpError.generic(`Target image is smaller than the source`);
    const state: CbwUserState = {
      clusterSize: CBW_CLUSTER_SIZE,
      onCbwError: (options['on-cbw-error'] as CbwUserState['onCbwError'] | undefined) ?? 'break-guest-write',
      timeoutMs: Number(options['cbw-timeout'] ?? 0) * 1000,
      clusters: bitmap ? copyOfBitmap(bitmap, file.length) : undefined,
    };
    return { state, length: file.length, requestAlignment: file.requestAlignment };
  },

  childPerms(node, role, perm, shared) {
    // The target is written by the filter alone; the source keeps readers, and
    // nobody else may write it behind the filter's back.
    if (role === 'target') return { perm: PERM.WRITE, shared: PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED };
    return { perm, shared: shared & (PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED | (keepsWriters(node) ? PERM.WRITE : 0)) };
  },

  plainFilename(node) {
    const file = node.child('file');
    return file ? nodeFilename(file) : undefined;
  },
};
