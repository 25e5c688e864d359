/**
 * Bytes received but not yet parsed. Chunks are kept as they arrived and
 * joined only when a field spans two of them, so a large WRITE payload that
 * arrives in one chunk is handed on without a copy.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /**
   * Removes and returns the first `n` bytes; the caller checked `length >= n`.
   * Bytes spread over several chunks are joined into a buffer from `alloc`.
   */
  take(n: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) {
      this.length -= n;
      if (first.length === n) {
        this.chunks.shift();
        return first;
      }
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = alloc(n);
    this.takeInto(out, 0);
    return out;
  }

  /** Moves queued bytes into `dest` from `at` on, as many as fit; returns how many. */
  takeInto(dest: Buffer, at: number): number {
    const n = Math.min(this.length, dest.length - at);
    let done = 0;
    while (done < n) {
      const c = this.chunks[0]!;
      const use = Math.min(c.length, n - done);
      c.copy(dest, at + done, 0, use);
      done += use;
      if (use === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    this.length -= n;
    return n;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = n;
    while (left > 0 && this.chunks.length > 0) {
      const c = this.chunks[0]!;
      if (c.length <= left) {
        left -= c.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.length -= n - left;
    return n - left;
  }

  /** Replaces what is queued by a copy of its own, for when the memory it came in is about to be reused. */
  detach(): void {
    if (this.length === 0) return;
    const copy = this.chunks.length === 1 ? Buffer.from(this.chunks[0]!) : Buffer.concat(this.chunks);
    this.chunks = [copy];
  }

  /** Everything still queued, as one buffer. */
  drain(): Buffer {
    const out = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = [];
    this.length = 0;
    return out;
  }
}
