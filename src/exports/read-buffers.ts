/**
 * Buffers for READ replies and for WRITE payloads that arrive in several
 * pieces, shared by every export type (NBD, FUSE, vhost-user-blk bounce
 * buffers), reused once nothing uses their bytes any more. A fresh
 * buffer per request costs an allocation the size of the request (for large
 * ones a mapping the kernel zero-fills page by page on first touch, then
 * unmaps at the next collection); serving from kept buffers avoids both.
 * Sizes are rounded up to a power of two. What the pool keeps is capped in
 * bytes, not in buffers: enough for every request a few busy connections
 * have in flight (4 connections × 32 requests × 256 KiB is 32 MiB), and no
 * more, so a burst of large requests does not pin its memory after it is over.
 */

const MIN_CLASS = 4096;
/** Requests above this are rare (clients cap them well below 32 MiB): allocated and left to the collector. */
const MAX_CLASS = 4 * 1024 * 1024;
/** Bytes the free lists may hold in all. */
const KEEP_BYTES = 64 * 1024 * 1024;
/**
 * Spare bytes in front of a reply's data, room for its header (a structured
 * OFFSET_DATA chunk's 28, a simple reply's 16): the reply then leaves as one
 * buffer, which a TLS session encrypts without first joining header and data.
 */
export const REPLY_HEADROOM = 32;

const free = new Map<number, Buffer[]>();
let keptBytes = 0;
/** The backing stores this pool handed out, so that a foreign buffer is never taken in. */
const owned = new WeakSet<ArrayBufferLike>();

function classOf(length: number): number {
  let size = MIN_CLASS;
  while (size < length) size *= 2;
  return size;
}

/** A whole pooled buffer with room for `length` bytes after REPLY_HEADROOM. */
function takeWhole(length: number): Buffer {
  if (length > MAX_CLASS) return Buffer.allocUnsafe(length + REPLY_HEADROOM);
  const size = classOf(length) + REPLY_HEADROOM;
  let whole = free.get(size)?.pop();
  if (whole) {
    keptBytes -= size;
  } else {
    // Its own backing store (never the shared small-buffer pool), so it can be kept whole.
    whole = Buffer.allocUnsafeSlow(size);
    owned.add(whole.buffer);
  }
  return whole;
}

/** A buffer of exactly `length` bytes, contents undefined; hand it back with `releaseReadBuffer` once nothing uses it. */
export function takeReadBuffer(length: number): Buffer {
  return takeWhole(length).subarray(0, length);
}

/**
 * A reply buffer: `data` is `length` bytes starting REPLY_HEADROOM bytes
 * into `whole`, so a header can be written just in front of it; hand
 * `whole` back with `releaseReadBuffer`.
 */
export function takeReplyBuffer(length: number): { whole: Buffer; data: Buffer } {
  const whole = takeWhole(length);
  return { whole, data: whole.subarray(REPLY_HEADROOM, REPLY_HEADROOM + length) };
}

/**
 * Returns a buffer from `takeReadBuffer`; anything else is ignored. Only
 * once nothing can still read or fill it: after a failed request some of its
 * pieces may still be under way, so such a buffer is left to the collector.
 */
export function releaseReadBuffer(buf: Buffer): void {
  if (buf.byteOffset !== 0 || !owned.has(buf.buffer)) return;
  const size = buf.buffer.byteLength;
  if (keptBytes + size > KEEP_BYTES) return;
  let list = free.get(size);
  if (!list) free.set(size, (list = []));
  list.push(Buffer.from(buf.buffer, 0, size));
  keptBytes += size;
}
