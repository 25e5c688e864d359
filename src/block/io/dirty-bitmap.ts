/**
 * A dirty bitmap of the I/O layer: one bit per `granularity` bytes of a
 * node, set by writes (through a write notifier) and cleared by the job
 * that copies the range. Lives in one I/O context; never crosses threads.
 */
export class DirtyBitmap {
  private readonly bits: Uint32Array;
  readonly chunks: number;
  /** Number of set bits. */
  private dirty = 0;
  private waiters: Array<() => void> = [];

  constructor(
    readonly length: number,
    readonly granularity: number,
  ) {
    if (granularity <= 0 || (granularity & (granularity - 1)) !== 0) throw new Error(`bad bitmap granularity ${granularity}`);
    this.chunks = Math.ceil(length / granularity);
    this.bits = new Uint32Array(Math.ceil(this.chunks / 32) || 1);
  }

  /** Dirty bytes, counting whole chunks (the last one may be short). */
  get count(): number {
    if (this.dirty === 0) return 0;
    const lastDirty = this.get(this.chunks - 1);
    return this.dirty * this.granularity - (lastDirty ? this.chunks * this.granularity - this.length : 0);
  }

  get(chunk: number): boolean {
    return (this.bits[chunk >>> 5]! & (1 << (chunk & 31))) !== 0;
  }

  private chunkRange(offset: number, bytes: number): [number, number] {
    const first = Math.floor(offset / this.granularity);
    const end = Math.min(this.chunks, Math.ceil((offset + bytes) / this.granularity));
    return [first, end];
  }

  /** Marks [offset, offset + bytes) dirty, widened to whole chunks. */
  set(offset: number, bytes: number): void {
    if (bytes <= 0) return;
    const [first, end] = this.chunkRange(offset, bytes);
    let added = 0;
    for (let c = first; c < end; c++) {
      const w = c >>> 5;
      const m = 1 << (c & 31);
      if ((this.bits[w]! & m) === 0) {
        this.bits[w]! |= m;
        added++;
      }
    }
    this.dirty += added;
    if (added > 0 && this.waiters.length > 0) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    }
  }

  setAll(): void {
    this.set(0, this.length);
  }

  /** Clears the chunks [first, end). */
  clearChunks(first: number, end: number): void {
    for (let c = first; c < end; c++) {
      const w = c >>> 5;
      const m = 1 << (c & 31);
      if ((this.bits[w]! & m) !== 0) {
        this.bits[w]! &= ~m;
        this.dirty--;
      }
    }
  }

  /** The first dirty chunk at or after `from`, or -1. */
  nextDirty(from: number): number {
    for (let c = from; c < this.chunks; ) {
      const word = this.bits[c >>> 5]! >>> (c & 31);
      if (word === 0) {
        c = ((c >>> 5) + 1) << 5;
        continue;
      }
      const at = c + (31 - Math.clz32(word & -word));
      return at < this.chunks ? at : -1;
    }
    return -1;
  }

  /** The end of the dirty run starting at `from`, at most `max` chunks long. */
  runEnd(from: number, max: number): number {
    let c = from;
    const stop = Math.min(this.chunks, from + max);
    while (c < stop && this.get(c)) c++;
    return c;
  }

  /** Resolves the next time a clean chunk becomes dirty. */
  whenDirtied(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
