/**
 * Dirty tracking on a node's write path: every write, write-zeroes and
 * discard that reaches a node sets the bits of the node's recording
 * bitmaps once it is done, whether it succeeded or not (a failed write may
 * have changed part of the range), as QEMU does when a write request ends.
 * The bits live in shared memory the main loop reads; no message, no lock.
 */
import { SharedDirtyBitmap, type SharedDirtyBitmapState } from '../common/shared-dirty-bitmap';
import type { IoNode } from './io-node';

export function markDirty(node: IoNode, offset: number, bytes: number): void {
  const bitmaps = node.dirtyBitmaps;
  for (let i = 0; i < bitmaps.length; i++) {
    const bm = bitmaps[i]!;
    if (bm.recording) bm.mark(offset, bytes);
  }
}

/** The node's bitmaps as the main loop sent them. */
export function setDirtyBitmaps(node: IoNode, states: readonly SharedDirtyBitmapState[] | undefined): void {
  node.dirtyBitmaps = (states ?? []).map((s) => SharedDirtyBitmap.from(s));
}
