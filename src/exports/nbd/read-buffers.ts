/**
 * Buffers for READ replies, reused once the socket has taken their bytes.
 * A fresh buffer per request costs an allocation the size of the read (for
 * large reads a mapping the kernel zero-fills page by page, then unmaps at
 * the next collection); serving from a few kept buffers per size class
 * avoids both. Sizes are rounded up to a power of two; a class keeps at
 * most `KEEP_PER_CLASS` free buffers, so a burst of large reads does not pin
 * its memory after it is over.
 */

const MIN_CLASS = 4096;
/** Reads above this are rare (clients cap requests well below 32 MiB): allocated and left to the collector. */
const MAX_CLASS = 4 * 1024 * 1024;
const KEEP_PER_CLASS = 64;

const free = new Map<number, Buffer[]>();
/** The backing stores this pool handed out, so that a foreign buffer is never taken in. */
const owned = new WeakSet<ArrayBufferLike>();

function classOf(length: number): number {
  let size = MIN_CLASS;
  while (size < length) size *= 2;
  return size;
}

/** A buffer of exactly `length` bytes, contents undefined; hand it back with `releaseReadBuffer` once nothing uses it. */
export function takeReadBuffer(length: number): Buffer {
  if (length > MAX_CLASS) return Buffer.allocUnsafe(length);
  const size = classOf(length);
  let whole = free.get(size)?.pop();
  if (!whole) {
    // Its own backing store (never the shared small-buffer pool), so it can be kept whole.
    whole = Buffer.allocUnsafeSlow(size);
    owned.add(whole.buffer);
  }
  return whole.subarray(0, length);
}

/** Returns a buffer from `takeReadBuffer`; anything else is ignored. */
export function releaseReadBuffer(buf: Buffer): void {
  if (buf.byteOffset !== 0 || !owned.has(buf.buffer)) return;
  const size = buf.buffer.byteLength;
  let list = free.get(size);
  if (!list) free.set(size, (list = []));
  if (list.length < KEEP_PER_CLASS) list.push(Buffer.from(buf.buffer, 0, size));
}
