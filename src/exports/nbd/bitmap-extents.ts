/**
 * Block status of a `qemu:dirty-bitmap:NAME` meta context: the request's
 * range cut into clean (0) and dirty (NBD_STATE_DIRTY) extents, read from
 * the bitmap's shared bits, as QEMU's bitmap_to_extents() cuts it.
 */
import { SharedDirtyBitmap, type SharedDirtyBitmapState } from '../../block/common/shared-dirty-bitmap';

export const STATE_DIRTY = 1;

const views = new WeakMap<SharedArrayBuffer, SharedDirtyBitmap>();

function view(state: SharedDirtyBitmapState): SharedDirtyBitmap {
  let bm = views.get(state.sab);
  if (!bm) {
    bm = SharedDirtyBitmap.from(state);
    views.set(state.sab, bm);
  }
  return bm;
}

/** Extents `[length, flags]` covering [offset, offset + length), at most `max` of them. */
export function dirtyBitmapExtents(state: SharedDirtyBitmapState, offset: number, length: number, max: number): Array<[number, number]> {
  const bm = view(state);
  const g = bm.granularity;
  const end = offset + length;
  const out: Array<[number, number]> = [];
  const add = (bytes: number, flags: number): boolean => {
    if (bytes <= 0) return true;
    const last = out[out.length - 1];
    if (last && last[1] === flags) {
      last[0] += bytes;
      return true;
    }
    if (out.length >= max) return false;
    out.push([bytes, flags]);
    return true;
  };
  let start = offset;
  while (start < end) {
    const c = bm.nextDirty(bm.chunkOf(start));
    const dirtyStart = c < 0 ? end : Math.max(start, c * g);
    if (dirtyStart >= end) break;
    const dirtyEnd = Math.min(end, bm.nextClean(c) * g);
    if (!add(dirtyStart - start, 0) || !add(dirtyEnd - dirtyStart, STATE_DIRTY)) return out;
    start = dirtyEnd;
  }
  add(end - start, 0);
  return out;
}
