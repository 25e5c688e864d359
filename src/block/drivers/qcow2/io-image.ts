/**
 * qcow2, I/O half: the open image — L1 table, refcount table, the metadata
 * caches, cluster allocation and the write ordering that keeps the image
 * consistent after a crash:
 *
 *  1. a refcount is raised (and written and synced) before an L2 entry that
 *     points at the cluster is written (`needRefGen` of an L2 cache entry);
 *  2. data and copied head/tail are written (and synced) before the L2 entry
 *     exposing them is written (`needSyncSeq`);
 *  3. a new L2 table, L1 table or refcount table is written and synced before
 *     the L1 entry or header field switching to it;
 *  4. a refcount goes down only after the L2/L1 change dropping the reference
 *     is on disk: frees are queued and applied after a metadata flush.
 *
 * A crash can therefore leak clusters but never leave a reference to a
 * cluster whose refcount does not cover it. Every metadata and allocating
 * data write is checked against the known metadata clusters first.
 *
 * With lazy refcounts, rule 1 is dropped once the dirty bit is set and
 * synced (before the first allocating L2 update): refcount blocks are then
 * written back beside the L2 tables, and a crash leaves a dirty image whose
 * refcounts are rebuilt on the next read-write open. Rules 2 to 4 still
 * hold (a freed cluster must not be reused while an L2 table on disk still
 * points at it: that would mix data, which no refcount repair undoes). The
 * bit is cleared after all metadata is written back and synced, when the
 * image is closed or becomes read-only, as QEMU's qcow2_mark_clean does.
 */
import { AUTOCLEAR_BITMAPS } from './bitmaps-format';
import { markBitmapsInUse } from './io-bitmaps';
import { repairRefcounts } from './io-repair';
import * as zlib from 'node:zlib';
import { IoError } from '../../common/io-types';
import type { IoNode } from '../../io/io-node';
import { discardNode, flushNode, readNode, truncateNode, writeNode } from '../../io/request';
import { RangeLocks } from '../../io/range-locks';
import {
  CORRUPT_EVENT,
  type CorruptEventData,
  DIRTY_FLAG_EVENT,
  geometry,
  type Geometry,
  getRefcount,
  HI_COMPRESSED,
  HI_OFFSET_MASK,
  LO_OFFSET_MASK,
  LO_ZERO,
  HDR,
  INCOMPAT,
  l1EntriesFor,
  maxRefcount,
  OFFSET_MASK,
  OFLAG_COMPRESSED,
  OFLAG_COPIED,
  OFLAG_ZERO,
  type Qcow2State,
  QCOW2_MAGIC,
  REFT_OFFSET_MASK,
  setRefcount,
} from './common';
import { type CacheEntry, MetadataCache } from './io-cache';
import { readSnapshotEntries, type SnapshotEntry } from './snapshot-table';

/** Metadata kinds, worded as QEMU's overlap messages name them. */
const KIND = {
  HEADER: 'qcow2_header',
  L1: 'active L1 table',
  L2: 'active L2 table',
  REFTABLE: 'refcount table',
  REFBLOCK: 'refcount block',
  SNAPSHOTS: 'snapshot table',
  INACTIVE_L1: 'inactive L1 table',
} as const;
type Kind = (typeof KIND)[keyof typeof KIND];

/** Frees waiting for a flush are applied early once this many clusters are queued. */
export const FREE_BATCH = 4096;

const GROW_STEP = 1 << 20;
const MAX_GROW_STEP = 64 << 20;

/**
 * How far the file grows at once: an eighth of its length (a power of two,
 * from 1 MiB to 64 MiB), so a long sequential write pays an ftruncate
 * every few dozen MiB rather than every 16 clusters. Close trims what was
 * not written.
 */
function growStep(length: number): number {
  return Math.max(GROW_STEP, Math.min(MAX_GROW_STEP, 2 ** Math.floor(Math.log2(Math.max(1, length / 8)))));
}

export type ClusterKind = 'unallocated' | 'zero' | 'normal' | 'compressed';

/** One run of guest clusters of the same kind (and, for `normal`, contiguous on the host). */
export interface Extent {
  kind: ClusterKind;
  guest: number;
  bytes: number;
  /** Host offset of `guest` for `normal`. */
  host: number;
  /** The L2 entry, for `compressed`. */
  entry: bigint;
}

class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }
}

export type EventSender = (kind: string, node: string, data: unknown) => void;

export class Qcow2Image {
  readonly g: Geometry;
  size = 0;
  l1: bigint[] = [];
  l1Offset = 0;
  reftable: number[] = [];
  reftableOffset = 0;
  reftableClusters = 0;
  incompatible = 0n;
  autoclear = 0n;
  /** Corruption found at run time: every request fails from now on. */
  fatal = false;
  /** The internal snapshot table as the header points at it now. */
  snapshots: SnapshotEntry[] = [];
  snapshotsOffset = 0;
  snapshotsBytes = 0;

  private l2Cache!: MetadataCache;
  private refCache!: MetadataCache;
  private readonly meta = new Map<number, Kind>();
  private readonly allocLock = new Mutex();
  private readonly l1Lock = new Mutex();
  private readonly reftableLock = new Mutex();
  private readonly growLock = new Mutex();
  private readonly l2Allocs = new Map<number, Promise<void>>();
  readonly guestLocks = new RangeLocks();
  private freeHint = 0;
  private pendingFrees = new Map<number, number>();
  /** Freed clusters whose release the guest asked for (discard, unmapping zero writes): passed down to the file once free. */
  private pendingDiscards = new Set<number>();
  private writablePrepared = false;
  private preparing?: Promise<void>;
  /** The header said dirty at load: the refcounts on disk cannot be trusted until rebuilt. */
  private loadedDirty = false;
  /** Nothing was ever written at or past this offset: clusters there still read as zeros. */
  private writtenEnd = 0;

  /** Raised on every refcount increase; `refFlushedGen` is the highest one known on disk. */
  private refGen = 0;
  private refFlushedGen = 0;
  private refFlush?: { gen: number; done: Promise<void> };
  /** Counts completed writes to the file; `syncedSeq` is the highest one a completed sync covers. */
  private writeSeq = 0;
  private syncedSeq = 0;
  private sync?: { seq: number; done: Promise<void> };
  private lastCompressed?: { entry: bigint; data: Buffer };
  /** The dirty bit being written before lazy allocations (one write for all waiting writers). */
  private markingDirty?: Promise<void>;
  /**
   * Where the next compressed cluster may start: the byte after the last
   * one, inside the host cluster that holds it; 0 for none. Forgotten as
   * soon as that host cluster is freed, so it can never point into a
   * cluster handed out again.
   */
  private compressedCursor = 0;

  constructor(
    readonly node: IoNode<unknown>,
    readonly st: Qcow2State,
    private readonly sendEvent: EventSender,
  ) {
    this.g = geometry(st.clusterBits, st.refcountOrder);
  }

  get file(): IoNode {
    return this.node.child('file');
  }

  get cs(): number {
    return this.g.clusterSize;
  }

  /** Bytes of guest data one L2 table maps. */
  get l2Span(): number {
    return this.g.l2Entries * this.g.clusterSize;
  }

  // ---- loading ------------------------------------------------------------

  /** Reads the header fields that change at run time and the L1 and refcount tables. */
  async load(): Promise<void> {
    const hdr = Buffer.alloc(HDR.compressionType);
    await this.readFile(0, hdr);
    if (hdr.readUInt32BE(0) !== QCOW2_MAGIC) throw new IoError('EIO', 'qcow2 header changed under the node');
    this.size = Number(hdr.readBigUInt64BE(HDR.size));
    const l1Size = hdr.readUInt32BE(HDR.l1Size);
    this.l1Offset = Number(hdr.readBigUInt64BE(HDR.l1TableOffset) & 0x7fffffffffffffffn);
    this.reftableOffset = Number(hdr.readBigUInt64BE(HDR.refcountTableOffset) & 0x7fffffffffffffffn);
    this.reftableClusters = hdr.readUInt32BE(HDR.refcountTableClusters);
    if (this.st.version >= 3) {
      this.incompatible = hdr.readBigUInt64BE(HDR.incompatibleFeatures);
      this.autoclear = hdr.readBigUInt64BE(HDR.autoclearFeatures);
      this.loadedDirty = this.refcountsMayBeStale;
    }
    const l1Buf = Buffer.alloc(l1Size * 8);
    await this.readFile(this.l1Offset, l1Buf);
    this.l1 = [];
    for (let i = 0; i < l1Size; i++) this.l1.push(l1Buf.readBigUInt64BE(i * 8));
    this.writtenEnd = this.file.length;
    const rtBuf = Buffer.alloc(this.reftableClusters * this.cs);
    await this.readFile(this.reftableOffset, rtBuf);
    this.reftable = [];
    for (let i = 0; i < rtBuf.length / 8; i++) this.reftable.push(Number(rtBuf.readBigUInt64BE(i * 8) & REFT_OFFSET_MASK));

    const l2Entries = Math.max(4, Math.floor(this.st.l2CacheBytes / this.cs));
    const refEntries = Math.max(4, Math.floor(this.st.refcountCacheBytes / this.cs));
    this.l2Cache = new MetadataCache(l2Entries, this.cs, {
      load: (off, buf) => this.readFile(off, buf),
      writeBack: (e) => this.writeBackL2(e),
    });
    this.refCache = new MetadataCache(refEntries, this.cs, {
      load: (off, buf) => this.readFile(off, buf),
      writeBack: (e) => this.writeBackRefblock(e),
    });

    this.meta.clear();
    this.meta.set(0, KIND.HEADER);
    this.markRange(this.l1Offset, l1Size * 8, KIND.L1);
    this.markRange(this.reftableOffset, this.reftableClusters * this.cs, KIND.REFTABLE);
    for (const off of this.reftable) if (off) this.meta.set(Math.floor(off / this.cs), KIND.REFBLOCK);
    for (const e of this.l1) {
      const off = Number(e & OFFSET_MASK);
      if (off) this.meta.set(Math.floor(off / this.cs), KIND.L2);
    }
    this.snapshotsOffset = this.st.snapshotsOffset;
    this.snapshots = [];
    if (this.st.nbSnapshots > 0) {
      const table = await readSnapshotEntries(
        async (o, n) => {
          const b = Buffer.alloc(Math.max(0, Math.min(n, this.file.length - o)));
          await this.readFile(o, b);
          return b;
        },
        this.snapshotsOffset,
        this.st.nbSnapshots,
        this.size,
      );
      this.snapshots = table.entries;
      this.snapshotsBytes = table.bytes;
      this.markRange(this.snapshotsOffset, this.snapshotsBytes, KIND.SNAPSHOTS);
      for (const sn of this.snapshots) if (sn.l1Size > 0) this.markRange(sn.l1Offset, sn.l1Size * 8, KIND.INACTIVE_L1);
    }
  }


  private markRange(offset: number, bytes: number, kind: Kind): void {
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + Math.max(bytes, 1) - 1) / this.cs);
    for (let c = first; c <= last; c++) this.meta.set(c, kind);
  }

  private unmarkRange(offset: number, bytes: number): void {
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + Math.max(bytes, 1) - 1) / this.cs);
    for (let c = first; c <= last; c++) this.meta.delete(c);
  }

  // ---- corruption ---------------------------------------------------------

  /** Marks the image corrupt (on disk when writable), tells the main loop, and returns the error to throw. */
  async corruption(msg: string, offset?: number, size?: number): Promise<IoError> {
    const fatal = !this.node.readOnly;
    if (fatal && !this.fatal) {
      this.fatal = true;
      this.st.corrupt = true;
      if (this.st.version >= 3) {
        try {
          const b = Buffer.alloc(8);
          b.writeBigUInt64BE(this.incompatible | INCOMPAT.CORRUPT);
          await writeNode(this.file, HDR.incompatibleFeatures, b);
          await flushNode(this.file);
          this.incompatible |= INCOMPAT.CORRUPT;
        } catch {
          // The image is unusable either way; the event and the error say why.
        }
      }
    }
    const data: CorruptEventData = { msg, fatal };
    if (offset !== undefined) data.offset = offset;
    if (size !== undefined) data.size = size;
    this.sendEvent(CORRUPT_EVENT, this.node.name, data);
    return new IoError('EIO', msg);
  }

  checkUsable(): void {
    if (this.fatal) throw new IoError('EIO', `qcow2 image ${this.node.name} is corrupt and was taken out of service`);
  }

  /** QEMU's overlap check: a write must not land on metadata other than `own`. */
  async checkOverlap(offset: number, bytes: number, own?: Kind): Promise<void> {
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + bytes - 1) / this.cs);
    for (let c = first; c <= last; c++) {
      const kind = this.meta.get(c);
      if (kind !== undefined && kind !== own) {
        throw await this.corruption(`Preventing invalid write on metadata (overlaps with ${kind})`, offset, bytes);
      }
    }
  }

  private async badOffset(what: string, offset: number): Promise<IoError> {
    return this.corruption(`${what} offset ${'0x' + offset.toString(16)} unaligned or out of range`, offset, this.cs);
  }

  // ---- file access --------------------------------------------------------

  /** Reads from the file; past its end reads zeros, as a file does. */
  async readFile(offset: number, buf: Buffer): Promise<void> {
    const file = this.file;
    const avail = Math.max(0, Math.min(buf.length, file.length - offset));
    if (avail > 0) await readNode(file, offset, buf.subarray(0, avail));
    if (avail < buf.length) buf.fill(0, avail);
  }

  /** Writes to the file, growing it first when the write ends past its end. */
  async writeFile(offset: number, buf: Buffer, fua = false): Promise<void> {
    const end = offset + buf.length;
    if (end > this.writtenEnd) this.writtenEnd = end;
    if (end > this.file.length) await this.growFile(end);
    await writeNode(this.file, offset, buf, fua ? { fua: true } : {});
    this.writeSeq++;
  }

  private async growFile(end: number): Promise<void> {
    const release = await this.growLock.lock();
    try {
      // Grow in steps: one ftruncate per allocated cluster would dominate allocating writes.
      const step = growStep(this.file.length);
      const target = Math.ceil(end / step) * step;
      if (end > this.file.length) {
        try {
          await truncateNode(this.file, target, false, 'off');
        } catch (err) {
          // A quota or a nearly full disk may leave room for the write but not for the whole step.
          if (target === end) throw err;
          await truncateNode(this.file, end, false, 'off');
        }
      }
    } finally {
      release();
    }
  }

  /** Gives back the room growFile added past the last write (at close: the file ends where its data does). */
  async trimGrowth(): Promise<void> {
    const release = await this.growLock.lock();
    try {
      if (this.file.length > this.writtenEnd) await truncateNode(this.file, this.writtenEnd, false, 'off');
    } finally {
      release();
    }
  }

  /** Waits until every file write completed before the call is on stable storage. */
  async ensureSynced(seq = this.writeSeq): Promise<void> {
    while (this.syncedSeq < seq) {
      if (this.sync) {
        const s = this.sync;
        await s.done;
        if (s.seq >= seq) return;
        continue;
      }
      const target = this.writeSeq;
      const done = flushNode(this.file).then(() => {
        if (target > this.syncedSeq) this.syncedSeq = target;
      });
      this.sync = { seq: target, done };
      try {
        await done;
      } finally {
        if (this.sync?.done === done) this.sync = undefined;
      }
    }
  }

  /** Waits until every refcount change up to generation `gen` is written and synced. */
  async ensureRefFlushed(gen = this.refGen): Promise<void> {
    while (this.refFlushedGen < gen) {
      if (this.refFlush) {
        const f = this.refFlush;
        await f.done;
        if (f.gen >= gen) return;
        continue;
      }
      const target = this.refGen;
      const done = (async () => {
        await this.refCache.flush();
        await this.ensureSynced();
        if (target > this.refFlushedGen) this.refFlushedGen = target;
      })();
      this.refFlush = { gen: target, done };
      try {
        await done;
      } finally {
        if (this.refFlush?.done === done) this.refFlush = undefined;
      }
    }
  }

  private async writeBackL2(e: CacheEntry): Promise<void> {
    for (;;) {
      if (e.needRefGen > this.refFlushedGen) await this.ensureRefFlushed(e.needRefGen);
      else if (e.needSyncSeq > this.syncedSeq) await this.ensureSynced(e.needSyncSeq);
      else break;
    }
    const snapshot = Buffer.from(e.buf);
    e.dirty = false;
    try {
      await this.checkOverlap(e.offset, this.cs, KIND.L2);
      await this.writeFile(e.offset, snapshot);
    } catch (err) {
      e.dirty = true;
      throw err;
    }
  }

  private async writeBackRefblock(e: CacheEntry): Promise<void> {
    const snapshot = Buffer.from(e.buf);
    e.dirty = false;
    try {
      await this.checkOverlap(e.offset, this.cs, KIND.REFBLOCK);
      await this.writeFile(e.offset, snapshot);
    } catch (err) {
      e.dirty = true;
      throw err;
    }
  }

  /** Records a change to an L2 table that needs the refcounts (unless the image is dirty) and data written so far on disk first. */
  private markL2Dirty(e: CacheEntry): void {
    e.dirty = true;
    // A dirty image gets its refcounts rebuilt on open: an L2 table may reach the disk before the refcounts it relies on.
    if (!this.refcountsMayBeStale) e.needRefGen = Math.max(e.needRefGen, this.refGen);
    e.needSyncSeq = Math.max(e.needSyncSeq, this.writeSeq);
  }

  /** Writes a header field (or other unmapped metadata) in place and syncs it. */
  private async writeHeaderField(offset: number, data: Buffer): Promise<void> {
    await this.checkOverlap(offset, data.length, offset < this.cs ? KIND.HEADER : undefined);
    await this.writeFile(offset, data);
    await this.ensureSynced();
  }

  /** Sets a cluster's refcount outright (refcount repair); the cluster must have a refcount block. */
  async setRefcountTo(cluster: number, value: number): Promise<void> {
    const release = await this.allocLock.lock();
    try {
      const current = await this.refcount(cluster);
      if (current !== value) await this.changeRefcount(cluster, value - current);
      if (value === 0 && cluster < this.freeHint) this.freeHint = cluster;
      if (value === 0 && this.compressedCursor && Math.floor(this.compressedCursor / this.cs) === cluster) this.compressedCursor = 0;
    } finally {
      release();
    }
  }

  /** Every cluster index that has a refcount block, with its refcount. */
  async *refcounts(): AsyncGenerator<[number, number]> {
    const epb = this.g.refcountBlockEntries;
    for (let rt = 0; rt < this.reftable.length; rt++) {
      if (!this.reftable[rt]) continue;
      for (let i = 0; i < epb; i++) {
        const c = rt * epb + i;
        yield [c, await this.refcount(c)];
      }
    }
  }

  hasRefcountBlock(cluster: number): boolean {
    return this.hasRefblock(cluster);
  }

  /** The dirty bit is set on disk: refcount updates need not reach the disk before the L2 updates relying on them. */
  get refcountsMayBeStale(): boolean {
    return (this.incompatible & INCOMPAT.DIRTY) !== 0n;
  }

  private setDirtyFlag(dirty: boolean): void {
    if (dirty) this.incompatible |= INCOMPAT.DIRTY;
    else this.incompatible &= ~INCOMPAT.DIRTY;
    this.st.dirty = dirty;
    this.sendEvent(DIRTY_FLAG_EVENT, this.node.name, { dirty });
  }

  /**
   * Sets the dirty bit (written and synced) before the first L2 update that
   * relies on lazily written refcounts, as QEMU's qcow2_mark_dirty does.
   * Only once the header is on disk does the image count as dirty.
   */
  async markDirty(): Promise<void> {
    if (this.refcountsMayBeStale) return;
    this.markingDirty ??= (async () => {
      try {
        const b = Buffer.alloc(8);
        b.writeBigUInt64BE(this.incompatible | INCOMPAT.DIRTY);
        await this.writeHeaderField(HDR.incompatibleFeatures, b);
        this.setDirtyFlag(true);
      } finally {
        this.markingDirty = undefined;
      }
    })();
    await this.markingDirty;
  }

  /**
   * Clears the dirty bit: every metadata change is written back and synced
   * first (refcounts included, so they are accurate again), then the header.
   * Updates made meanwhile keep the ordering of a clean image, since the bit
   * is cleared in memory first (as QEMU's qcow2_mark_clean does). Used after a
   * refcount repair, at close, and when the image becomes read-only.
   */
  async markClean(): Promise<void> {
    // Refcounts found stale at load and not yet rebuilt (an image never written since) stay marked so.
    if (!this.refcountsMayBeStale || this.loadedDirty) return;
    this.incompatible &= ~INCOMPAT.DIRTY;
    try {
      do await this.flushAll();
      while (this.hasDirtyMetadata);
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(this.incompatible);
      await this.writeHeaderField(HDR.incompatibleFeatures, b);
    } catch (err) {
      // The header still says dirty: so does the image.
      this.incompatible |= INCOMPAT.DIRTY;
      throw err;
    }
    this.setDirtyFlag(false);
  }

  /** After a refcount rebuild: the refcounts can be trusted again, and the dirty bit goes. */
  async markRepaired(): Promise<void> {
    this.loadedDirty = false;
    await this.markClean();
  }

  /**
   * Before the first write: a dirty image (found so at load, or at the
   * first write after a switch to read-write) gets its refcounts rebuilt,
   * stored bitmaps are marked in use, and autoclear bits are cleared except
   * the bitmaps one (qbd maintains no other structure they vouch for). A
   * dirty image loses that one too: the refcount repair does not count
   * bitmap clusters, so it must not trust them.
   */
  async prepareWrite(): Promise<void> {
    this.checkUsable();
    if (this.writablePrepared) return;
    this.preparing ??= this.prepareWriteOnce().finally(() => (this.preparing = undefined));
    await this.preparing;
  }

  private async prepareWriteOnce(): Promise<void> {
    const keep = this.loadedDirty ? 0n : this.autoclear & AUTOCLEAR_BITMAPS;
    if (keep) await markBitmapsInUse(this);
    if (this.autoclear !== keep) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(keep);
      await this.writeHeaderField(HDR.autoclearFeatures, b);
      this.autoclear = keep;
    }
    if (this.loadedDirty) await repairRefcounts(this);
    this.writablePrepared = true;
  }

  /** Writes metadata outside the mapped tables (header, bitmap directory) and syncs it. */
  async writeMetadata(offset: number, buf: Buffer): Promise<void> {
    await this.writeHeaderField(offset, buf);
  }

  // ---- refcounts and allocation ------------------------------------------

  private async refblockFor(cluster: number): Promise<CacheEntry | undefined> {
    const rt = Math.floor(cluster / this.g.refcountBlockEntries);
    const off = rt < this.reftable.length ? this.reftable[rt]! : 0;
    if (!off) return undefined;
    if (off % this.cs !== 0 || off + this.cs > this.file.length) throw await this.badOffset('Refcount block', off);
    return this.refCache.get(off);
  }

  async refcount(cluster: number): Promise<number> {
    const blk = await this.refblockFor(cluster);
    return blk ? getRefcount(blk.buf, cluster % this.g.refcountBlockEntries, this.g.refcountOrder) : 0;
  }

  private hasRefblock(cluster: number): boolean {
    const rt = Math.floor(cluster / this.g.refcountBlockEntries);
    return rt < this.reftable.length && this.reftable[rt]! !== 0;
  }

  /**
   * Allocates a run of 1 to `n` contiguous clusters at the lowest free place,
   * with refcount 1. A cluster whose range has no refcount block yet gets one
   * first (at the start of that range), so runs stop at such ranges.
   */
  async allocRun(n: number): Promise<{ offset: number; count: number; fresh: boolean }> {
    const release = await this.allocLock.lock();
    try {
      for (;;) {
        const c = await this.firstFree();
        if (!this.hasRefblock(c)) {
          await this.createRefblock(Math.floor(c / this.g.refcountBlockEntries));
          continue;
        }
        let count = 1;
        while (count < n && this.hasRefblock(c + count) && (await this.refcount(c + count)) === 0) count++;
        for (let k = 0; k < count; k++) await this.changeRefcount(c + k, 1);
        this.freeHint = c + count;
        const end = (c + count) * this.cs;
        const fresh = c * this.cs >= this.writtenEnd;
        // Reserved now, so that a later run is not taken for fresh before this one is written.
        if (end > this.writtenEnd) this.writtenEnd = end;
        if (end > this.file.length) await this.growFile(end);
        return { offset: c * this.cs, count, fresh };
      }
    } finally {
      release();
    }
  }

  /**
   * Allocates `size` bytes (less than a cluster) for one compressed cluster,
   * packed after the previous one when it fits in the same host cluster, as
   * QEMU's qcow2_alloc_bytes does. Each compressed cluster that starts in a
   * host cluster adds one to that cluster's refcount.
   */
  async allocCompressedBytes(size: number): Promise<number> {
    const cs = this.cs;
    const release = await this.allocLock.lock();
    let offset = 0;
    try {
      const cursor = this.compressedCursor;
      if (cursor && (cursor % cs) + size <= cs) {
        const cluster = Math.floor(cursor / cs);
        if ((await this.refcount(cluster)) < maxRefcount(this.g.refcountOrder)) {
          await this.changeRefcount(cluster, 1);
          offset = cursor;
        }
      }
    } finally {
      release();
    }
    if (!offset) offset = await this.allocClusters(1);
    this.compressedCursor = (offset + size) % cs === 0 ? 0 : offset + size;
    return offset;
  }

  /** The L2 entry of a compressed cluster whose `size` bytes start at host `offset`. */
  compressedEntry(offset: number, size: number): bigint {
    const extraSectors = Math.floor((offset + size - 1) / 512) - Math.floor(offset / 512);
    return BigInt(offset) | OFLAG_COMPRESSED | (BigInt(extraSectors) << BigInt(62 - (this.g.clusterBits - 8)));
  }

  /** Allocates exactly `n` contiguous clusters (tables); returns the host offset. */
  async allocClusters(n: number): Promise<number> {
    if (n >= this.g.refcountBlockEntries) throw new IoError('ENOSPC', `Cannot allocate ${n} contiguous clusters`);
    const held: Array<{ offset: number; count: number; fresh: boolean }> = [];
    try {
      for (;;) {
        const r = await this.allocRun(n);
        if (r.count === n) return r.offset;
        held.push(r);
      }
    } finally {
      if (held.length > 0) {
        // Runs too short for the table were never referenced: give them back at once.
        const release = await this.allocLock.lock();
        try {
          for (const r of held) {
            for (let k = 0; k < r.count; k++) await this.changeRefcount(r.offset / this.cs + k, -1);
            this.freeHint = Math.min(this.freeHint, r.offset / this.cs);
          }
        } finally {
          release();
        }
      }
    }
  }

  /** The lowest cluster at or after the free hint with refcount 0 (or without a refcount block). */
  private async firstFree(): Promise<number> {
    const epb = this.g.refcountBlockEntries;
    let c = this.freeHint;
    for (;;) {
      if (!this.hasRefblock(c)) return c;
      const blk = await this.refblockFor(c);
      for (let i = c % epb; i < epb; i++, c++) {
        if (getRefcount(blk!.buf, i, this.g.refcountOrder) === 0) return c;
      }
    }
  }

  private async changeRefcount(cluster: number, delta: number): Promise<number> {
    const blk = await this.refblockFor(cluster);
    if (!blk) throw await this.corruption(`Cluster ${cluster} has no refcount block`, cluster * this.cs, this.cs);
    const i = cluster % this.g.refcountBlockEntries;
    const old = getRefcount(blk.buf, i, this.g.refcountOrder);
    const next = old + delta;
    if (next < 0) throw await this.corruption(`Refcount of cluster ${cluster} would drop below zero`, cluster * this.cs, this.cs);
    if (next > maxRefcount(this.g.refcountOrder)) throw new IoError('ERANGE', `Refcount of cluster ${cluster} would overflow`);
    setRefcount(blk.buf, i, this.g.refcountOrder, next);
    blk.dirty = true;
    if (delta > 0) this.refGen++;
    return next;
  }

  /**
   * A new refcount block for refcount table index `rt`, placed at the first
   * cluster it covers (free by definition, since nothing counted it) and
   * counting itself. Written and synced before the table points at it.
   */
  private async createRefblock(rt: number): Promise<void> {
    if (rt >= this.reftable.length) {
      await this.growReftable(rt);
      return;
    }
    const epb = this.g.refcountBlockEntries;
    const cluster = rt * epb;
    const off = cluster * this.cs;
    const buf = Buffer.alloc(this.cs);
    setRefcount(buf, 0, this.g.refcountOrder, 1);
    await this.checkOverlap(off, this.cs);
    await this.writeFile(off, buf);
    await this.ensureSynced();
    this.meta.set(cluster, KIND.REFBLOCK);
    await this.setReftableEntry(rt, off);
    this.refGen++;
    await this.refCache.adopt(off, buf);
  }

  private async setReftableEntry(rt: number, off: number): Promise<void> {
    const release = await this.reftableLock.lock();
    try {
      this.reftable[rt] = off;
      const sector = Math.floor((rt * 8) / 512) * 512;
      const end = Math.min(sector + 512, this.reftable.length * 8);
      const b = Buffer.alloc(end - sector);
      for (let i = sector / 8; i < end / 8; i++) b.writeBigUInt64BE(BigInt(this.reftable[i]!), i * 8 - sector);
      await this.checkOverlap(this.reftableOffset + sector, b.length, KIND.REFTABLE);
      await this.writeFile(this.reftableOffset + sector, b);
    } finally {
      release();
    }
  }

  /**
   * Grows the refcount table so that index `need` exists. The new table and
   * the refcount blocks that count it go past everything the old table could
   * describe (so nothing there is in use): blocks first, then the table; all
   * written and synced before the header switches to the new table.
   */
  private async growReftable(need: number): Promise<void> {
    const epb = this.g.refcountBlockEntries;
    const old = this.reftable.length;
    const base = old * epb;
    let blocks = 1;
    let tableClusters: number;
    let entries: number;
    for (;;) {
      entries = Math.max(need + 1, old + blocks, Math.ceil(old * 1.5));
      tableClusters = Math.ceil((entries * 8) / this.cs);
      entries = (tableClusters * this.cs) / 8;
      if (blocks * epb >= blocks + tableClusters) break;
      blocks++;
    }
    const blockBufs: Buffer[] = [];
    for (let b = 0; b < blocks; b++) blockBufs.push(Buffer.alloc(this.cs));
    for (let c = 0; c < blocks + tableClusters; c++) setRefcount(blockBufs[Math.floor(c / epb)]!, c % epb, this.g.refcountOrder, 1);
    const table = Buffer.alloc(tableClusters * this.cs);
    const newTable = [...this.reftable];
    for (let b = 0; b < blocks; b++) newTable[old + b] = (base + b) * this.cs;
    while (newTable.length < entries) newTable.push(0);
    newTable.forEach((v, i) => table.writeBigUInt64BE(BigInt(v), i * 8));

    const blocksOff = base * this.cs;
    const tableOff = (base + blocks) * this.cs;
    await this.checkOverlap(blocksOff, (blocks + tableClusters) * this.cs);
    await this.writeFile(blocksOff, Buffer.concat(blockBufs));
    await this.writeFile(tableOff, table);
    // The refcount blocks in the cache must be on disk before the new table (which points at them) is live.
    await this.refCache.flush();
    await this.ensureSynced();

    const release = await this.reftableLock.lock();
    const oldOff = this.reftableOffset;
    const oldClusters = this.reftableClusters;
    try {
      const hdr = Buffer.alloc(12);
      hdr.writeBigUInt64BE(BigInt(tableOff), 0);
      hdr.writeUInt32BE(tableClusters, 8);
      await this.writeHeaderField(HDR.refcountTableOffset, hdr);
      this.reftable = newTable;
      this.reftableOffset = tableOff;
      this.reftableClusters = tableClusters;
    } finally {
      release();
    }
    this.refGen++;
    for (let b = 0; b < blocks; b++) {
      this.meta.set(base + b, KIND.REFBLOCK);
      await this.refCache.adopt((base + b) * this.cs, blockBufs[b]!);
    }
    this.unmarkRange(oldOff, oldClusters * this.cs);
    this.markRange(tableOff, tableClusters * this.cs, KIND.REFTABLE);
    for (let c = 0; c < oldClusters; c++) this.queueFreeCluster(oldOff / this.cs + c);
  }

  private queueFreeCluster(cluster: number, count = 1): void {
    this.pendingFrees.set(cluster, (this.pendingFrees.get(cluster) ?? 0) + count);
  }

  /** Queues the release of what an L2 entry referenced, applied once the entry's replacement is on disk. */
  queueFree(entry: bigint, guestDiscard = false): void {
    if (guestDiscard && this.st.passDiscard && !(entry & OFLAG_COMPRESSED)) {
      const off = Number(entry & OFFSET_MASK);
      if (off) this.pendingDiscards.add(off / this.cs);
    }
    if (entry & OFLAG_COMPRESSED) {
      const { start, bytes } = this.compressedRange(entry);
      const first = Math.floor(start / this.cs);
      const last = Math.floor((start + bytes - 1) / this.cs);
      for (let c = first; c <= last; c++) this.queueFreeCluster(c);
      return;
    }
    const off = Number(entry & OFFSET_MASK);
    if (off) this.queueFreeCluster(off / this.cs);
  }

  /** Queues the release of the clusters of [offset, offset + bytes), applied once the references dropped are on disk. */
  queueFreeRange(offset: number, bytes: number): void {
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + Math.max(bytes, 1) - 1) / this.cs);
    for (let c = first; c <= last; c++) this.queueFreeCluster(c);
  }

  get freesPending(): number {
    return this.pendingFrees.size;
  }

  /** Writes the L2 changes that dropped references, then lowers the refcounts. */
  async applyFrees(): Promise<void> {
    if (this.pendingFrees.size === 0) return;
    const batch = this.pendingFrees;
    this.pendingFrees = new Map();
    await this.ensureRefFlushed();
    await this.l2Cache.flush();
    await this.ensureSynced();
    const release = await this.allocLock.lock();
    try {
      for (const [cluster, count] of batch) {
        const left = await this.changeRefcount(cluster, -count);
        if (left === 0 && cluster < this.freeHint) this.freeHint = cluster;
        if (left === 0 && this.compressedCursor && Math.floor(this.compressedCursor / this.cs) === cluster) this.compressedCursor = 0;
        // Still under the allocation lock: the cluster cannot be handed out again before the discard.
        if (left === 0 && this.pendingDiscards.delete(cluster)) await discardNode(this.file, cluster * this.cs, this.cs);
      }
      for (const cluster of batch.keys()) this.pendingDiscards.delete(cluster);
    } finally {
      release();
    }
  }

  /** Everything written so far reaches stable storage, in dependency order. */
  async flushAll(): Promise<void> {
    const hadFrees = this.pendingFrees.size > 0;
    // A dirty image writes refcount blocks and L2 tables side by side; a clean one, refcounts first.
    if (this.refcountsMayBeStale) await Promise.all([this.refCache.flush(), this.l2Cache.flush()]);
    else await this.ensureRefFlushed();
    await this.l2Cache.flush();
    // Lowered refcounts (a repair's) raise no generation: they go out here, after the L2 tables.
    await this.refCache.flush();
    await this.ensureSynced();
    if (hadFrees) {
      await this.applyFrees();
      await this.refCache.flush();
      await this.ensureSynced();
    }
  }

  get hasDirtyMetadata(): boolean {
    return this.pendingFrees.size > 0 || this.l2Cache.hasDirty || this.refCache.hasDirty;
  }

  // ---- L1 and L2 -----------------------------------------------------------

  private async setL1Entry(i: number, value: bigint): Promise<void> {
    const release = await this.l1Lock.lock();
    try {
      this.l1[i] = value;
      const sector = Math.floor((i * 8) / 512) * 512;
      const end = Math.min(sector + 512, this.l1.length * 8);
      const b = Buffer.alloc(end - sector);
      for (let k = sector / 8; k < end / 8; k++) b.writeBigUInt64BE(this.l1[k]!, k * 8 - sector);
      await this.checkOverlap(this.l1Offset + sector, b.length, KIND.L1);
      await this.writeFile(this.l1Offset + sector, b);
    } finally {
      release();
    }
  }

  /** The L2 table of L1 index `i` for reading, or 0 when there is none. */
  async l2For(i: number): Promise<number> {
    const entry = i < this.l1.length ? this.l1[i]! : 0n;
    const off = Number(entry & OFFSET_MASK);
    if (off && (off % this.cs !== 0 || off + this.cs > this.file.length)) throw await this.badOffset('L2 table', off);
    return off;
  }

  /** The L2 table of L1 index `i`, allocated (or copied, when shared) if need be. */
  async l2ForWrite(i: number): Promise<number> {
    if (i >= this.l1.length) throw new IoError('EIO', `L1 index ${i} beyond the L1 table`);
    for (;;) {
      const pending = this.l2Allocs.get(i);
      if (pending) {
        await pending;
        continue;
      }
      // No await between the check of l2Allocs and its update: two writers must not both allocate.
      const entry = this.l1[i]!;
      const off = Number(entry & OFFSET_MASK);
      if (off % this.cs !== 0 || off + this.cs > this.file.length) throw await this.badOffset('L2 table', off);
      if (off && entry & OFLAG_COPIED) return off;
      const p = this.newL2Table(i, off);
      this.l2Allocs.set(i, p);
      try {
        await p;
      } finally {
        this.l2Allocs.delete(i);
      }
    }
  }

  private async newL2Table(i: number, oldOff: number): Promise<void> {
    const host = await this.allocClusters(1);
    const buf = oldOff ? Buffer.from((await this.l2Cache.get(oldOff)).buf) : Buffer.alloc(this.cs);
    await this.ensureRefFlushed();
    await this.checkOverlap(host, this.cs);
    await this.writeFile(host, buf);
    await this.ensureSynced();
    this.meta.set(host / this.cs, KIND.L2);
    await this.setL1Entry(i, BigInt(host) | OFLAG_COPIED);
    if (oldOff) {
      this.meta.delete(oldOff / this.cs);
      this.l2Cache.drop(oldOff);
      this.queueFreeCluster(oldOff / this.cs);
    }
    await this.l2Cache.adopt(host, buf);
  }

  async l2Table(off: number): Promise<CacheEntry> {
    return this.l2Cache.get(off);
  }

  /**
   * Points guest clusters at newly allocated host clusters (entries
   * [first, first + values.length) of table `off`). With lazy refcounts the
   * image is marked dirty first, so the change need not wait for refcounts.
   */
  async linkClusters(off: number, first: number, values: bigint[]): Promise<bigint[]> {
    if (this.st.useLazyRefcounts) await this.markDirty();
    return this.setL2Entries(off, first, values);
  }

  /** Sets L2 entries [first, first + values.length) of table `off`; the change waits for refcounts and data. */
  async setL2Entries(off: number, first: number, values: bigint[]): Promise<bigint[]> {
    const e = await this.l2Cache.get(off);
    const olds: bigint[] = [];
    values.forEach((v, k) => {
      olds.push(e.buf.readBigUInt64BE((first + k) * 8));
      e.buf.writeBigUInt64BE(v, (first + k) * 8);
    });
    this.markL2Dirty(e);
    return olds;
  }

  classify(entry: bigint): ClusterKind {
    if (entry & OFLAG_COMPRESSED) return 'compressed';
    if (this.st.version >= 3 && entry & OFLAG_ZERO) return 'zero';
    return entry & OFFSET_MASK ? 'normal' : 'unallocated';
  }

  /** Whether a write may go to the cluster in place (allocated, not shared, not compressed, not zero). */
  inPlace(entry: bigint): boolean {
    return this.classify(entry) === 'normal' && (entry & OFLAG_COPIED) !== 0n;
  }

  /**
   * The extents of [offset, offset + bytes), which must lie inside one L2
   * table's span; with `firstOnly` just the first, as block status asks
   * (compressed clusters then count as one extent). Entries are read as two
   * 32-bit halves: BigInt arithmetic on every cluster of a large request
   * cost more than the rest of the mapping.
   */
  async mapRange(offset: number, bytes: number, firstOnly = false): Promise<Extent[]> {
    const cs = this.cs;
    const l1i = Math.floor(offset / this.l2Span);
    const l2Off = await this.l2For(l1i);
    if (!l2Off) return [{ kind: 'unallocated', guest: offset, bytes, host: 0, entry: 0n }];
    const buf = (await this.l2Cache.get(l2Off)).buf;
    const zeroFlag = this.st.version >= 3;
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + bytes;
    while (pos < end) {
      const at = (Math.floor(pos / cs) % this.g.l2Entries) * 8;
      const hi = buf.readUInt32BE(at);
      const lo = buf.readUInt32BE(at + 4);
      const base = (hi & HI_OFFSET_MASK) * 0x100000000 + ((lo & LO_OFFSET_MASK) >>> 0);
      const kind: ClusterKind = hi & HI_COMPRESSED ? 'compressed' : zeroFlag && lo & LO_ZERO ? 'zero' : base ? 'normal' : 'unallocated';
      const inCluster = Math.min(end, (Math.floor(pos / cs) + 1) * cs) - pos;
      let host = 0;
      if (kind === 'normal') {
        if (base % cs !== 0) throw await this.badOffset('Data cluster', base);
        host = base + (pos % cs);
      }
      const last = out[out.length - 1];
      const merges = last !== undefined && last.kind === kind && (kind === 'compressed' ? firstOnly : kind !== 'normal' || last.host + last.bytes === host);
      if (merges) {
        last.bytes += inCluster;
      } else {
        if (firstOnly && last) break;
        out.push({ kind, guest: pos, bytes: inCluster, host, entry: kind === 'compressed' ? buf.readBigUInt64BE(at) : 0n });
      }
      pos += inCluster;
    }
    return out;
  }

  // ---- internal snapshots -------------------------------------------------------

  /**
   * Adds `delta` to a cluster's refcount now. Raising is always safe (a
   * crash leaks); lowering here is only for a reference never written (an
   * increase being undone): other releases go through queueFree.
   */
  async adjustRefcount(cluster: number, delta: number): Promise<number> {
    const release = await this.allocLock.lock();
    try {
      const left = await this.changeRefcount(cluster, delta);
      if (left === 0 && cluster < this.freeHint) this.freeHint = cluster;
      return left;
    } finally {
      release();
    }
  }

  /**
   * Adds `delta` once per occurrence of each cluster in `clusters` (as
   * adjustRefcount, for many clusters), each refcount block fetched once.
   * All or nothing: a count that would leave its range changes none.
   */
  async adjustRefcounts(clusters: Iterable<number>, delta: number): Promise<void> {
    const counts = new Map<number, number>();
    for (const c of clusters) counts.set(c, (counts.get(c) ?? 0) + delta);
    // A typed array sorts numerically, and fast: snapshots of large images count millions of clusters.
    const sorted = Float64Array.from(counts.keys()).sort();
    const epb = this.g.refcountBlockEntries;
    const order = this.g.refcountOrder;
    const release = await this.allocLock.lock();
    try {
      const blockOf = async (c: number): Promise<CacheEntry> => {
        const blk = await this.refblockFor(c);
        if (!blk) throw await this.corruption(`Cluster ${c} has no refcount block`, c * this.cs, this.cs);
        return blk;
      };
      for (const pass of ['check', 'apply'] as const) {
        let current = -1;
        let blk: CacheEntry | undefined;
        for (const c of sorted) {
          const rt = Math.floor(c / epb);
          if (rt !== current) {
            blk = await blockOf(c);
            current = rt;
          }
          const next = getRefcount(blk!.buf, c % epb, order) + counts.get(c)!;
          if (pass === 'check') {
            if (next < 0) throw await this.corruption(`Refcount of cluster ${c} would drop below zero`, c * this.cs, this.cs);
            if (next > maxRefcount(order)) throw new IoError('ERANGE', `Refcount of cluster ${c} would overflow`);
            continue;
          }
          setRefcount(blk!.buf, c % epb, order, next);
          blk!.dirty = true;
          if (next === 0) {
            if (c < this.freeHint) this.freeHint = c;
            if (this.compressedCursor && Math.floor(this.compressedCursor / this.cs) === c) this.compressedCursor = 0;
          }
        }
      }
      if (delta > 0 && sorted.length > 0) this.refGen++;
    } finally {
      release();
    }
  }

  /** The refcounts of `clusters`, each refcount block fetched once. */
  async refcountsOf(clusters: Iterable<number>): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const epb = this.g.refcountBlockEntries;
    const sorted = Float64Array.from(new Set(clusters)).sort();
    let current = -1;
    let blk: CacheEntry | undefined;
    for (const c of sorted) {
      const rt = Math.floor(c / epb);
      if (rt !== current) {
        blk = await this.refblockFor(c);
        current = rt;
      }
      out.set(c, blk ? getRefcount(blk.buf, c % epb, this.g.refcountOrder) : 0);
    }
    return out;
  }

  /** Sets active L1 entry `i` (written, not synced). */
  async writeL1Entry(i: number, value: bigint): Promise<void> {
    await this.setL1Entry(i, value);
  }

  /** An L2 table that was freed leaves the cache (it was never dirty: only snapshots referenced it). */
  forgetL2Table(off: number): void {
    this.l2Cache.drop(off);
  }

  /** Writes a table the image will reference (an L1 copy) into allocated clusters, checked against the metadata. */
  async writeNewMetadata(offset: number, buf: Buffer, kind: 'inactive L1 table'): Promise<void> {
    await this.checkOverlap(offset, buf.length);
    await this.writeFile(offset, buf);
    this.markRange(offset, buf.length, kind);
  }

  /** An inactive L1 table going away: no longer protected by the overlap check. */
  unmarkInactiveL1(offset: number, bytes: number): void {
    this.unmarkRange(offset, bytes);
  }

  /**
   * Makes the header point at a new snapshot table holding `entries`
   * (encoded as `table`): the table is written to new clusters and synced
   * with every refcount raised so far, then the header's count and offset
   * switch in one write, then the old table's clusters are queued for
   * release. An empty table is recorded as offset 0. `snapshots` changes
   * only once the header write was attempted: when it is unchanged after a
   * failure, the image on disk is as it was.
   */
  async replaceSnapshotTable(entries: SnapshotEntry[], table: Buffer): Promise<void> {
    let offset = 0;
    const clusters = Math.ceil(table.length / this.cs);
    try {
      if (entries.length > 0) {
        offset = await this.allocClusters(clusters);
        await this.checkOverlap(offset, table.length);
        await this.writeFile(offset, table);
      }
      await this.ensureRefFlushed();
      await this.l2Cache.flush();
      await this.ensureSynced();
    } catch (err) {
      // Nothing references the new table yet: its clusters go back at once.
      if (offset) for (let k = 0; k < clusters; k++) await this.adjustRefcount(offset / this.cs + k, -1).catch(() => undefined);
      throw err;
    }
    const hdr = Buffer.alloc(12);
    hdr.writeUInt32BE(entries.length, 0);
    hdr.writeBigUInt64BE(BigInt(offset), 4);
    try {
      await this.writeHeaderField(HDR.nbSnapshots, hdr);
    } catch (err) {
      // The header may or may not have reached the disk: carry on as if it had, the safe assumption (old table kept, leaked at worst).
      this.adoptSnapshotTable(entries, offset, table.length, false);
      throw err;
    }
    this.adoptSnapshotTable(entries, offset, table.length, true);
  }

  private adoptSnapshotTable(entries: SnapshotEntry[], offset: number, bytes: number, freeOld: boolean): void {
    if (this.snapshots.length > 0) {
      this.unmarkRange(this.snapshotsOffset, this.snapshotsBytes);
      if (freeOld) this.queueFreeRange(this.snapshotsOffset, this.snapshotsBytes);
    }
    this.snapshots = entries;
    this.snapshotsOffset = offset;
    this.snapshotsBytes = bytes;
    this.st.nbSnapshots = entries.length;
    this.st.snapshotsOffset = offset;
    if (entries.length > 0) this.markRange(offset, bytes, KIND.SNAPSHOTS);
  }

  // ---- reading -------------------------------------------------------------

  compressedRange(entry: bigint): { start: number; bytes: number; offset: number; csize: number } {
    const shift = BigInt(62 - (this.g.clusterBits - 8));
    const offset = Number(entry & ((1n << shift) - 1n));
    const sectors = Number((entry >> shift) & ((1n << BigInt(this.g.clusterBits - 8)) - 1n)) + 1;
    const start = offset - (offset % 512);
    return { start, bytes: sectors * 512, offset, csize: sectors * 512 - (offset % 512) };
  }

  async decompress(entry: bigint): Promise<Buffer> {
    if (this.lastCompressed?.entry === entry) return this.lastCompressed.data;
    const { offset, csize } = this.compressedRange(entry);
    if (offset >= this.file.length) throw await this.corruption(`Compressed cluster at ${offset} lies past the end of the file`, offset, csize);
    const input = Buffer.alloc(Math.min(csize, 2 * this.cs + 512));
    await this.readFile(offset, input);
    const data = await new Promise<Buffer>((resolve, reject) =>
      zlib.inflateRaw(input, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: this.cs }, (err, out) =>
        err ? reject(new IoError('EIO', `Could not decompress the cluster at host offset ${offset}: ${err.message}`)) : resolve(out),
      ),
    );
    if (data.length !== this.cs) throw new IoError('EIO', `Compressed cluster at host offset ${offset} does not hold a whole cluster`);
    this.lastCompressed = { entry, data };
    return data;
  }

  /** Reads guest data that this image does not hold: from the backing chain, zeros past its end. */
  async readBacking(guest: number, buf: Buffer): Promise<void> {
    const backing = this.node.backing;
    const avail = backing ? Math.max(0, Math.min(buf.length, backing.length - guest)) : 0;
    if (avail > 0) await readNode(backing!, guest, buf.subarray(0, avail));
    if (avail < buf.length) buf.fill(0, avail);
  }

  async readExtent(x: Extent, buf: Buffer): Promise<void> {
    switch (x.kind) {
      case 'normal':
        return this.readFile(x.host, buf);
      case 'zero':
        buf.fill(0);
        return;
      case 'unallocated':
        return this.readBacking(x.guest, buf);
      case 'compressed': {
        const data = await this.decompress(x.entry);
        const at = x.guest % this.cs;
        data.copy(buf, 0, at, at + buf.length);
      }
    }
  }

  // ---- resizing --------------------------------------------------------------

  /** Grows the image to `size` bytes: a larger L1 table if needed, then the size field. */
  /** The L1 entry of table `i` (0 beyond the table). */
  l1Entry(i: number): bigint {
    return this.l1[i] ?? 0n;
  }

  /**
   * Shrinking, after the cropped clusters were unmapped: L2 tables past the
   * new size leave the L1 table (entry cleared on disk before their clusters
   * are freed), the header gets the new size, and the file loses the free
   * clusters at its end, as QEMU's qcow2_co_truncate does.
   */
  async shrink(size: number): Promise<void> {
    const need = l1EntriesFor(size, this.g);
    for (let i = need; i < this.l1.length; i++) {
      const off = Number(this.l1[i]! & OFFSET_MASK);
      if (!off) continue;
      await this.setL1Entry(i, 0n);
      this.meta.delete(off / this.cs);
      this.l2Cache.drop(off);
      this.queueFreeCluster(off / this.cs);
    }
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(size));
    await this.writeHeaderField(HDR.size, b);
    this.size = size;
    await this.flushAll();
    await this.dropUnusedRefblocks();
    await this.trimFile();
  }

  /**
   * Takes refcount blocks that count nothing but themselves out of the
   * refcount table (QEMU's qcow2_shrink_reftable), so the file can end
   * before them. The table entry is on disk before the block's cluster is
   * free; a block that counts itself goes with its own count.
   */
  private async dropUnusedRefblocks(): Promise<void> {
    const epb = this.g.refcountBlockEntries;
    const release = await this.allocLock.lock();
    const freed: number[] = [];
    try {
      for (let rt = 1; rt < this.reftable.length; rt++) {
        const off = this.reftable[rt]!;
        if (!off) continue;
        const blk = await this.refCache.get(off);
        const self = Math.floor(off / this.cs / epb) === rt ? (off / this.cs) % epb : -1;
        let unused = true;
        for (let i = 0; i < epb && unused; i++) {
          const r = getRefcount(blk.buf, i, this.g.refcountOrder);
          if (r !== 0 && !(i === self && r === 1)) unused = false;
        }
        if (!unused) continue;
        await this.setReftableEntry(rt, 0);
        this.refCache.drop(off);
        this.meta.delete(off / this.cs);
        if (self < 0) freed.push(off / this.cs);
      }
      await this.ensureSynced();
      for (const cluster of freed) {
        await this.changeRefcount(cluster, -1);
        if (cluster < this.freeHint) this.freeHint = cluster;
      }
    } finally {
      release();
    }
    if (freed.length > 0) await this.flushAll();
  }

  /** Cuts the file after its last cluster in use; a failure only leaves free space behind. */
  private async trimFile(): Promise<void> {
    const release = await this.allocLock.lock();
    try {
      let last = -1;
      for await (const [cluster, refcount] of this.refcounts()) if (refcount > 0) last = cluster;
      const end = (last + 1) * this.cs;
      if (last < 0 || end >= this.file.length) return;
      await truncateNode(this.file, end, false, 'off').catch(() => undefined);
      if (this.writtenEnd > end) this.writtenEnd = end;
    } finally {
      release();
    }
  }

  async grow(size: number): Promise<void> {
    const need = l1EntriesFor(size, this.g);
    if (need > this.l1.length) {
      const bytes = need * 8;
      const clusters = Math.ceil(bytes / this.cs);
      const host = await this.allocClusters(clusters);
      await this.ensureRefFlushed();
      const release = await this.l1Lock.lock();
      try {
        const table = Buffer.alloc(clusters * this.cs);
        this.l1.forEach((v, k) => table.writeBigUInt64BE(v, k * 8));
        await this.checkOverlap(host, table.length);
        await this.writeFile(host, table);
        await this.ensureSynced();
        const hdr = Buffer.alloc(12);
        hdr.writeUInt32BE(need, 0);
        hdr.writeBigUInt64BE(BigInt(host), 4);
        await this.writeHeaderField(HDR.l1Size, hdr);
        const oldOff = this.l1Offset;
        const oldClusters = Math.ceil((this.l1.length * 8) / this.cs);
        while (this.l1.length < need) this.l1.push(0n);
        this.l1Offset = host;
        if (oldClusters > 0 && oldOff) {
          this.unmarkRange(oldOff, oldClusters * this.cs);
          for (let c = 0; c < oldClusters; c++) this.queueFreeCluster(oldOff / this.cs + c);
        }
        this.markRange(host, clusters * this.cs, KIND.L1);
      } finally {
        release();
      }
    }
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(size));
    await this.writeHeaderField(HDR.size, b);
    this.size = size;
  }
}
