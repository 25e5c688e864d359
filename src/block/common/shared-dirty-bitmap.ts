/**
 * The bits of a dirty bitmap, in memory both worlds see: a SharedArrayBuffer
 * holding one control word and one bit per `granularity` bytes of a node.
 * I/O contexts set bits on the write path with atomic ORs, without a lock
 * and without a message; the main loop reads, clears and merges them with
 * atomic operations of its own. Nothing here belongs to either world: the
 * object is rebuilt on each side from its clonable `state`.
 *
 * The bit array is laid out as QEMU serializes an HBitmap: chunk `i` is bit
 * `i % 8` of byte `i / 8`, padded to whole 64-bit words. On little-endian
 * hosts (every host Node.js supports) the buffer's bytes are therefore the
 * serialized bitmap, which `x-debug-block-dirty-bitmap-sha256` hashes.
 */

/** What crosses the thread boundary: the shared memory and its shape. */
export interface SharedDirtyBitmapState {
  readonly sab: SharedArrayBuffer;
  /** Bytes of the node the bitmap covers. */
  readonly length: number;
  readonly granularity: number;
  /** What the node's driver needs to store the bitmap (set on the copies sent to I/O contexts). */
  readonly name?: string;
  readonly persistent?: boolean;
  readonly inconsistent?: boolean;
}

/** A bitmap a format driver found in its image at open. */
export interface StoredBitmap {
  name: string;
  bits: SharedDirtyBitmapState;
  enabled: boolean;
  /** Found in use: not stored after its last change; its bits are meaningless. */
  inconsistent: boolean;
}

/** Control word 0: set while the bitmap records writes. */
const CTRL_RECORDING = 1;
const CTRL_BYTES = 8;

/** Bytes of the bit array for `length` bytes at `granularity`: whole 64-bit words. */
function bitBytes(length: number, granularity: number): number {
  const chunks = Math.ceil(length / granularity);
  return Math.ceil(chunks / 64) * 8;
}

export class SharedDirtyBitmap {
  readonly length: number;
  readonly granularity: number;
  /** Chunks (bits) the bitmap has: the last one may cover less than `granularity` bytes. */
  readonly chunks: number;
  private readonly ctrl: Int32Array;
  private readonly words: Int32Array;

  private constructor(readonly state: SharedDirtyBitmapState) {
    this.length = state.length;
    this.granularity = state.granularity;
    this.chunks = Math.ceil(state.length / state.granularity);
    this.ctrl = new Int32Array(state.sab, 0, 2);
    this.words = new Int32Array(state.sab, CTRL_BYTES);
  }

  /** A new, clean bitmap; `granularity` is a power of two. */
  static create(length: number, granularity: number, recording: boolean): SharedDirtyBitmap {
    if (granularity < 1 || (granularity & (granularity - 1)) !== 0 || granularity > 2 ** 31) throw new Error(`bad bitmap granularity ${granularity}`);
    const sab = new SharedArrayBuffer(CTRL_BYTES + bitBytes(length, granularity));
    const bm = new SharedDirtyBitmap({ sab, length, granularity });
    bm.recording = recording;
    return bm;
  }

  /** The same bitmap, seen from another thread. */
  static from(state: SharedDirtyBitmapState): SharedDirtyBitmap {
    return new SharedDirtyBitmap(state);
  }

  get recording(): boolean {
    return (Atomics.load(this.ctrl, 0) & CTRL_RECORDING) !== 0;
  }

  set recording(on: boolean) {
    if (on) Atomics.or(this.ctrl, 0, CTRL_RECORDING);
    else Atomics.and(this.ctrl, 0, ~CTRL_RECORDING);
  }

  /** The chunk holding byte `offset` (offsets past the end give chunks past the end). */
  chunkOf(offset: number): number {
    return Math.floor(offset / this.granularity);
  }

  /** Marks [offset, offset + bytes) dirty, widened to whole chunks: the write path's call. */
  mark(offset: number, bytes: number): void {
    if (bytes <= 0) return;
    const first = Math.floor(offset / this.granularity);
    const end = Math.min(this.chunks, Math.ceil((offset + bytes) / this.granularity));
    this.setChunks(first, end);
  }

  /** Sets the chunks [first, end). */
  setChunks(first: number, end: number): void {
    const words = this.words;
    let c = first;
    while (c < end) {
      const w = c >>> 5;
      const lo = c & 31;
      const hi = Math.min(32, lo + (end - c));
      const mask = hi - lo === 32 ? -1 : ((1 << (hi - lo)) - 1) << lo;
      // A plain read first: most writes land in chunks already dirty, and a read costs less than an atomic OR.
      if ((words[w]! & mask) !== mask) Atomics.or(words, w, mask);
      c += hi - lo;
    }
  }

  /** Clears the chunks [first, end). */
  clearChunks(first: number, end: number): void {
    const words = this.words;
    let c = first;
    while (c < end) {
      const w = c >>> 5;
      const lo = c & 31;
      const hi = Math.min(32, lo + (end - c));
      const mask = hi - lo === 32 ? -1 : ((1 << (hi - lo)) - 1) << lo;
      if ((words[w]! & mask) !== 0) Atomics.and(words, w, ~mask);
      c += hi - lo;
    }
  }

  /** Clears [offset, offset + bytes), shrunk to the chunks it covers whole (the end of the node counts as whole). */
  reset(offset: number, bytes: number): void {
    const first = Math.ceil(offset / this.granularity);
    const stop = offset + bytes >= this.length ? this.chunks : Math.floor((offset + bytes) / this.granularity);
    if (stop > first) this.clearChunks(first, stop);
  }

  isDirty(chunk: number): boolean {
    return (Atomics.load(this.words, chunk >>> 5) & (1 << (chunk & 31))) !== 0;
  }

  /** Whether any byte of [offset, offset + bytes) is in a dirty chunk. */
  isRangeDirty(offset: number, bytes: number): boolean {
    const next = this.nextDirty(this.chunkOf(offset));
    return next >= 0 && next * this.granularity < offset + bytes;
  }

  /** The first dirty chunk at or after `from`, or -1. */
  nextDirty(from: number): number {
    const words = this.words;
    for (let c = from; c < this.chunks; ) {
      const word = words[c >>> 5]! >>> (c & 31);
      if (word === 0) {
        c = ((c >>> 5) + 1) << 5;
        continue;
      }
      const at = c + (31 - Math.clz32(word & -word));
      return at < this.chunks ? at : -1;
    }
    return -1;
  }

  /** The first clean chunk at or after `from`, or `chunks`. */
  nextClean(from: number): number {
    const words = this.words;
    for (let c = from; c < this.chunks; ) {
      const word = ~words[c >>> 5]! >>> (c & 31);
      if (word === 0) {
        c = ((c >>> 5) + 1) << 5;
        continue;
      }
      return Math.min(this.chunks, c + (31 - Math.clz32(word & -word)));
    }
    return this.chunks;
  }

  /** Dirty chunks. */
  dirtyChunks(): number {
    let n = 0;
    const words = this.words;
    for (let i = 0; i < words.length; i++) {
      let v = words[i]!;
      if (v === 0) continue;
      v = v - ((v >>> 1) & 0x55555555);
      v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
      n += (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
    }
    return n;
  }

  /** Dirty bytes as QEMU counts them: whole chunks, the last one too. */
  count(): number {
    return this.dirtyChunks() * this.granularity;
  }

  clearAll(): void {
    for (let i = 0; i < this.words.length; i++) if (this.words[i] !== 0) Atomics.store(this.words, i, 0);
  }

  setAll(): void {
    this.setChunks(0, this.chunks);
  }

  /** A private copy of the bits, for undoing a change (transactions). */
  snapshot(): Int32Array {
    return Int32Array.from(this.words);
  }

  restore(copy: Int32Array): void {
    for (let i = 0; i < this.words.length; i++) Atomics.store(this.words, i, copy[i]!);
  }

  /** Sets every chunk that covers a byte dirty in `src` (any granularity, same length). */
  merge(src: SharedDirtyBitmap): void {
    if (src.granularity === this.granularity) {
      for (let i = 0; i < this.words.length; i++) {
        const v = src.words[i]!;
        if (v !== 0 && (this.words[i]! & v) !== v) Atomics.or(this.words, i, v);
      }
      return;
    }
    for (let c = src.nextDirty(0); c >= 0; ) {
      const end = src.nextClean(c);
      this.mark(c * src.granularity, (end - c) * src.granularity);
      c = end < src.chunks ? src.nextDirty(end) : -1;
    }
  }

  /** The bits as QEMU serializes them (a copy: hashing and storing must not read memory that moves). */
  serialize(): Buffer {
    return Buffer.from(new Uint8Array(this.state.sab, CTRL_BYTES).slice());
  }

  /** Loads bits in the serialized layout (at most the bitmap's size). */
  deserialize(bytes: Uint8Array): void {
    const copy = new Int32Array(this.words.length);
    new Uint8Array(copy.buffer).set(bytes.subarray(0, copy.byteLength));
    // Bits past the last chunk stay clear.
    if (this.chunks & 31) copy[this.chunks >>> 5]! &= (1 << (this.chunks & 31)) - 1;
    for (let i = (this.chunks + 31) >>> 5; i < copy.length; i++) copy[i] = 0;
    this.restore(copy);
  }

  /** A copy of this bitmap for another length (resize): bits past the new end are dropped, new ones are clean. */
  resized(length: number): SharedDirtyBitmap {
    const bm = SharedDirtyBitmap.create(length, this.granularity, this.recording);
    const copy = this.snapshot();
    const bytes = new Uint8Array(copy.buffer, 0, Math.min(copy.byteLength, bm.words.byteLength));
    bm.deserialize(bytes);
    return bm;
  }
}
