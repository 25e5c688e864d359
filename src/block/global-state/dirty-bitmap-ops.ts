/**
 * The operations behind the block-dirty-bitmap-* commands and their
 * transaction actions, with QEMU's checks in QEMU's order. Each returns
 * what a transaction needs to undo it.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { SharedDirtyBitmap } from '../common/shared-dirty-bitmap';
import {
  CHECK,
  CHECK_ALLOW_RO,
  CHECK_DEFAULT,
  checkBitmap,
  createBitmap,
  defaultGranularity,
  findBitmap,
  lookupBitmap,
  releaseBitmap,
  type BdrvDirtyBitmap,
} from './dirty-bitmaps';
import { findNode } from './graph';
import { canStorePersistentBitmap, removePersistentBitmap } from './persistent-bitmaps';

export interface BitmapAddArgs {
  node: string;
  name: string;
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

/** A bitmap named by node and name, or by name alone on the merge target's node. */
export type BitmapRef = string | { node: string; name: string };

/** block-dirty-bitmap-add. */
export async function addDirtyBitmap(args: BitmapAddArgs): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  if (args.name === '') throw QmpError.generic('Bitmap name cannot be empty');
  const node = findNode(args.node);
  if (!node) throw QmpError.generic(`Cannot find device='${args.node}' nor node-name='${args.node}'`);
  let granularity: number;
  if (args.granularity !== undefined) {
    granularity = args.granularity;
    if (granularity < 512 || (granularity & (granularity - 1)) !== 0) throw QmpError.generic('Granularity must be power of 2 and at least 512');
  } else {
    granularity = defaultGranularity(node);
  }
  if (args.persistent === true) canStorePersistentBitmap(node, args.name, granularity);
  const bm = await createBitmap(node, granularity, args.name, args.persistent === true);
  if (args.disabled === true) bm.enabled = false;
  return bm;
}

/**
 * block-dirty-bitmap-remove's checks and the removal from the image. With
 * `release` the bitmap is dropped at once; otherwise the caller (a
 * transaction) keeps it until commit.
 */
export async function removeDirtyBitmap(nodeName: string, name: string, release: boolean): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  const bm = lookupBitmap(nodeName, name);
  checkBitmap(bm, CHECK.BUSY | CHECK.RO);
  if (bm.persistent) await removePersistentBitmap(bm);
  if (release) await releaseBitmap(bm);
  return bm;
}

/** block-dirty-bitmap-clear; returns the bits before, for undo. */
export function clearDirtyBitmap(nodeName: string, name: string): { bm: BdrvDirtyBitmap; before: Int32Array } {
  assertMainLoop();
  const bm = lookupBitmap(nodeName, name);
  checkBitmap(bm, CHECK_DEFAULT);
  const before = bm.bits.snapshot();
  bm.bits.clearAll();
  return { bm, before };
}

/** block-dirty-bitmap-enable / -disable; returns the state before, for undo. */
export function setDirtyBitmapEnabled(nodeName: string, name: string, enabled: boolean): { bm: BdrvDirtyBitmap; wasEnabled: boolean } {
  assertMainLoop();
  const bm = lookupBitmap(nodeName, name);
  checkBitmap(bm, CHECK_ALLOW_RO);
  const wasEnabled = bm.enabled;
  bm.enabled = enabled;
  return { bm, wasEnabled };
}

/**
 * block-dirty-bitmap-merge: the sources are merged into a scratch bitmap
 * first, so the target changes only when every source was good. Returns the
 * target's bits before, for undo.
 */
export function mergeDirtyBitmaps(nodeName: string, target: string, sources: BitmapRef[]): { bm: BdrvDirtyBitmap; before: Int32Array } {
  assertMainLoop();
  const dest = lookupBitmap(nodeName, target);
  checkBitmap(dest, CHECK_DEFAULT);
  const scratch = SharedDirtyBitmap.create(dest.size, dest.granularity, false);
  for (const ref of sources) {
    let src: BdrvDirtyBitmap | undefined;
    if (typeof ref === 'string') {
      src = findBitmap(dest.node, ref);
      if (!src) throw QmpError.generic(`Dirty bitmap '${ref}' not found`);
    } else {
      src = lookupBitmap(ref.node, ref.name);
    }
    checkBitmap(src, CHECK_ALLOW_RO);
    if (src.size !== dest.size) {
      throw QmpError.generic(`Bitmaps are of different sizes (destination size is ${dest.size}, source size is ${src.size}) and can't be merged`);
    }
    scratch.merge(src.bits);
  }
  const before = dest.bits.snapshot();
  dest.bits.merge(scratch);
  return { bm: dest, before };
}
