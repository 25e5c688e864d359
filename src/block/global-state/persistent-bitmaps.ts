/**
 * Persistent dirty bitmaps: whether a node can store one, and removing one
 * from the image. Only qcow2 stores bitmaps (its bitmaps extension); the
 * checks and their words are QEMU's.
 */
import { QmpError } from '../../qmp/errors';
import type { BlockNode } from './block-node';
import * as proto from '../common/io-context-protocol';
import { BITMAP_MAX_NAME, bitmapsOf, syncBitmaps, type BdrvDirtyBitmap } from './dirty-bitmaps';

/** QEMU's limits of the qcow2 bitmaps extension. */
const QCOW2_MAX_BITMAPS = 65535;
const MIN_GRANULARITY_BITS = 9;
const MAX_GRANULARITY_BITS = 31;

function qcow2Version(node: BlockNode): number {
  return (node.state as { version: number }).version;
}

/** QEMU's bdrv_can_store_new_dirty_bitmap(), with the qcow2 driver's constraints. */
export function canStorePersistentBitmap(node: BlockNode, name: string, granularity: number): void {
  if (node.driver.descriptor.name !== 'qcow2') {
    throw QmpError.generic(`Can't store persistent bitmaps to ${node.name}: Operation not supported`);
  }
  const refuse = (why: string): never => {
    throw QmpError.generic(`Can't make bitmap '${name}' persistent in '${node.name}': ${why}`);
  };
  if (qcow2Version(node) < 3) refuse('Cannot store dirty bitmaps in qcow2 v2 files');
  if (Buffer.byteLength(name) > BITMAP_MAX_NAME) refuse(`Name length exceeds maximum (${BITMAP_MAX_NAME} characters)`);
  const bits = Math.log2(granularity);
  if (bits > MAX_GRANULARITY_BITS) refuse(`Granularity exceeds maximum (${2 ** MAX_GRANULARITY_BITS} bytes)`);
  if (bits < MIN_GRANULARITY_BITS) refuse(`Granularity is under minimum (${2 ** MIN_GRANULARITY_BITS} bytes)`);
  const stored = storedBitmapCount(node);
  if (stored >= QCOW2_MAX_BITMAPS) refuse('Maximum number of persistent bitmaps is already reached');
}

/** Persistent bitmaps the image holds or will hold. */
function storedBitmapCount(node: BlockNode): number {
  return bitmapsOf(node).filter((b) => b.persistent).length;
}

/**
 * Drops a persistent bitmap from the image at once, as QEMU does: the
 * bitmap stops being persistent and the driver rewrites its directory
 * without it. (A transaction that aborts makes it persistent again; it is
 * stored when the node closes.)
 */
export async function removePersistentBitmap(bm: BdrvDirtyBitmap): Promise<void> {
  bm.persistent = false;
  await syncBitmaps(bm.node);
  if (bm.node.attached && !bm.node.readOnly) await bm.node.ctx.channel.request(proto.storeBitmaps, { nodeName: bm.node.name });
}
