/**
 * Persistent dirty bitmaps: whether a node can store one, and removing one
 * from the image. A format that stores bitmaps (qcow2, its bitmaps
 * extension) says so with `persistentBitmapRefusal` in its GS table; the
 * wording around its reasons is QEMU's.
 */
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import type { BlockNode } from './block-node';
import { bitmapsOf, syncBitmaps, type BdrvDirtyBitmap } from './dirty-bitmaps';

/** QEMU's bdrv_can_store_new_dirty_bitmap(). */
export function canStorePersistentBitmap(node: BlockNode, name: string, granularity: number): void {
  const refusal = node.driver.persistentBitmapRefusal;
  if (!refusal) throw QmpError.generic(`Can't store persistent bitmaps to ${node.name}: Operation not supported`);
  const stored = bitmapsOf(node).filter((b) => b.persistent).length;
  const why = refusal(node, name, granularity, stored);
  if (why !== undefined) throw QmpError.generic(`Can't make bitmap '${name}' persistent in '${node.name}': ${why}`);
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
