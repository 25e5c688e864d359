/**
 * qcow2, common part: the on-disk layout (header fields, entry bits) and the
 * parsing both halves need. The format is QEMU's `docs/interop/qcow2.txt`.
 * Pure code: no I/O, no global state.
 */

import type { SnapshotInfo } from './snapshot-table';
import type { StoredBitmap } from '../../common/shared-dirty-bitmap';

export const QCOW2_MAGIC = 0x514649fb;

/** Byte offsets of the header fields (all big-endian). */
export const HDR = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

export const V2_HEADER_LENGTH = 72;
export const V3_HEADER_LENGTH = 104;

export const INCOMPAT = {
  DIRTY: 1n << 0n,
  CORRUPT: 1n << 1n,
  DATA_FILE: 1n << 2n,
  COMPRESSION: 1n << 3n,
  EXTL2: 1n << 4n,
} as const;
export const INCOMPAT_KNOWN = INCOMPAT.DIRTY | INCOMPAT.CORRUPT | INCOMPAT.DATA_FILE | INCOMPAT.COMPRESSION | INCOMPAT.EXTL2;

export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

export const EXT = {
  END: 0,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_TABLE: 0x6803f857,
  BITMAPS: 0x23852875,
  CRYPTO: 0x0537be77,
  DATA_FILE: 0x44415441,
} as const;

/** L1 and standard L2 entry bits. */
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;
/** Bits 9-55: a host offset. */
export const OFFSET_MASK = 0x00fffffffffffe00n;
/** Bits of an L2 entry a standard cluster may have set; others are reserved (must be 0). */
export const L2_RESERVED_MASK = ~(OFLAG_COPIED | OFLAG_COMPRESSED | OFFSET_MASK | OFLAG_ZERO) & 0xffffffffffffffffn;
export const L1_RESERVED_MASK = ~(OFLAG_COPIED | OFFSET_MASK) & 0xffffffffffffffffn;
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;
/**
 * The same bits for an entry read as two 32-bit halves (`hi` bits 32-63,
 * `lo` bits 0-31), as the read path's mapping does to stay off BigInt.
 */
export const HI_COMPRESSED = Number(OFLAG_COMPRESSED >> 32n);
export const HI_OFFSET_MASK = Number((OFFSET_MASK >> 32n) & 0xffffffffn);
export const LO_OFFSET_MASK = Number(OFFSET_MASK & 0xffffffffn);
export const LO_ZERO = Number(OFLAG_ZERO);

export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** QEMU's limits on table sizes (bytes), which bound what a hostile header can make us allocate. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_BACKING_NAME = 1023;

/** The header fields qbd interprets. */
export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
}

export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

/** A format error: the message is what the user sees (QEMU's wording where it has one). */
export class Qcow2FormatError extends Error {}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2FormatError(`qcow2 header field at byte ${at} is out of range`);
  return Number(v);
}

export function parseHeader(buf: Buffer): Qcow2Header {
  if (buf.length < V2_HEADER_LENGTH || buf.readUInt32BE(HDR.magic) !== QCOW2_MAGIC) {
    throw new Qcow2FormatError('Image is not in qcow2 format');
  }
  const version = buf.readUInt32BE(HDR.version);
  if (version < 2 || version > 3) throw new Qcow2FormatError(`Unsupported qcow2 version ${version}`);
  const v3 = version === 3;
  if (v3 && buf.length < V3_HEADER_LENGTH) throw new Qcow2FormatError('qcow2 header too short');
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(buf, HDR.backingFileOffset),
    backingFileSize: buf.readUInt32BE(HDR.backingFileSize),
    clusterBits: buf.readUInt32BE(HDR.clusterBits),
    size: u64(buf, HDR.size),
    cryptMethod: buf.readUInt32BE(HDR.cryptMethod),
    l1Size: buf.readUInt32BE(HDR.l1Size),
    l1TableOffset: u64(buf, HDR.l1TableOffset),
    refcountTableOffset: u64(buf, HDR.refcountTableOffset),
    refcountTableClusters: buf.readUInt32BE(HDR.refcountTableClusters),
    nbSnapshots: buf.readUInt32BE(HDR.nbSnapshots),
    snapshotsOffset: u64(buf, HDR.snapshotsOffset),
    incompatible: v3 ? buf.readBigUInt64BE(HDR.incompatibleFeatures) : 0n,
    compatible: v3 ? buf.readBigUInt64BE(HDR.compatibleFeatures) : 0n,
    autoclear: v3 ? buf.readBigUInt64BE(HDR.autoclearFeatures) : 0n,
    refcountOrder: v3 ? buf.readUInt32BE(HDR.refcountOrder) : 4,
    headerLength: v3 ? buf.readUInt32BE(HDR.headerLength) : V2_HEADER_LENGTH,
    compressionType: 0,
  };
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS) {
    throw new Qcow2FormatError(`Unsupported cluster size: 2^${h.clusterBits}`);
  }
  const clusterSize = 2 ** h.clusterBits;
  if (v3) {
    if (h.headerLength < V3_HEADER_LENGTH) throw new Qcow2FormatError('qcow2 header too short');
    if (h.headerLength > clusterSize) throw new Qcow2FormatError('qcow2 header exceeds cluster size');
    if (h.headerLength > HDR.compressionType && buf.length > HDR.compressionType) h.compressionType = buf[HDR.compressionType]!;
  }
  if (h.refcountOrder > 6) throw new Qcow2FormatError('Reference count entry width too large; may not exceed 64 bits');
  if (h.backingFileOffset > clusterSize || h.backingFileOffset + h.backingFileSize > clusterSize) {
    throw new Qcow2FormatError('Invalid backing file offset');
  }
  if (h.backingFileOffset !== 0 && h.backingFileSize > MAX_BACKING_NAME) {
    throw new Qcow2FormatError('Backing file name too long');
  }
  return h;
}

/** Header extensions between the header and the end of the first cluster (or the backing file name). */
export function parseExtensions(buf: Buffer, h: Qcow2Header): HeaderExtension[] {
  const clusterSize = 2 ** h.clusterBits;
  const end = h.backingFileOffset !== 0 ? Math.min(h.backingFileOffset, clusterSize) : clusterSize;
  const out: HeaderExtension[] = [];
  let at = h.headerLength;
  while (at + 8 <= Math.min(end, buf.length)) {
    const type = buf.readUInt32BE(at);
    const len = buf.readUInt32BE(at + 4);
    at += 8;
    if (type === EXT.END) break;
    if (at + len > end || at + len > buf.length) throw new Qcow2FormatError('Invalid header extension: extension exceeds the first cluster');
    out.push({ type, data: Uint8Array.prototype.slice.call(buf, at, at + len) });
    at += (len + 7) & ~7;
  }
  return out;
}

/** Names of incompatible features, from the feature table extension, for error messages. */
export function featureName(exts: HeaderExtension[], kind: number, bit: number): string | undefined {
  const table = exts.find((e) => e.type === EXT.FEATURE_TABLE);
  if (!table) return undefined;
  const d = Buffer.from(table.data.buffer, table.data.byteOffset, table.data.byteLength);
  for (let at = 0; at + 48 <= d.length; at += 48) {
    if (d[at] === kind && d[at + 1] === bit) return d.subarray(at + 2, at + 48).toString('latin1').replace(/\0.*$/s, '');
  }
  return undefined;
}

/** Layout numbers derived from the header. */
export interface Geometry {
  clusterBits: number;
  clusterSize: number;
  /** L2 entries per table. */
  l2Entries: number;
  refcountOrder: number;
  refcountBits: number;
  /** Refcount entries per refcount block. */
  refcountBlockEntries: number;
}

export function geometry(clusterBits: number, refcountOrder: number): Geometry {
  const clusterSize = 2 ** clusterBits;
  const refcountBits = 2 ** refcountOrder;
  return {
    clusterBits,
    clusterSize,
    l2Entries: clusterSize / 8,
    refcountOrder,
    refcountBits,
    refcountBlockEntries: (clusterSize * 8) / refcountBits,
  };
}

/** L1 entries needed for `size` bytes of guest data. */
export function l1EntriesFor(size: number, g: Geometry): number {
  const bytesPerL2 = g.l2Entries * g.clusterSize;
  return Math.ceil(size / bytesPerL2);
}

/** State the GS half hands to the I/O half. Tables are loaded by the I/O half itself, on first use. */
export interface Qcow2State {
  /** Static facts from the header at open. */
  version: number;
  clusterBits: number;
  refcountOrder: number;
  /** Image has internal snapshots: clusters may be shared, writes must copy. */
  nbSnapshots: number;
  snapshotsOffset: number;
  /** The image was marked corrupt (on disk or at run time). */
  corrupt: boolean;
  /** Incompatible bit 0 is set on disk (refcounts may be stale). */
  dirty: boolean;
  /** The header's lazy-refcounts compatible bit (what queries report). */
  lazyRefcounts: boolean;
  /** Writes use lazy refcounts: the header bit, or the `lazy-refcounts` runtime option overriding it. */
  useLazyRefcounts: boolean;
  /** Cache sizes in bytes. */
  l2CacheBytes: number;
  refcountCacheBytes: number;
  /** Forward discard requests to the file (pass-discard-request). */
  passDiscard: boolean;
  /** For messages and queries. */
  compat: '0.10' | '1.1';
  backingFilename?: string;
  backingFormat?: string;
  extensions: Array<{ type: number; length: number }>;
  /** Persistent bitmaps found at open, until the GS half adopts them. */
  storedBitmaps?: StoredBitmap[];
  /** The internal snapshot table, for queries. */
  snapshots?: SnapshotInfo[];
}

/** What the I/O half reports to the GS half through an `io.event` notification. */
export const CORRUPT_EVENT = 'qcow2.corrupt';
/** The dirty bit was set (before a lazy-refcounts allocation) or cleared (repair, clean close) on disk; data is `{ dirty: boolean }`. */
export const DIRTY_FLAG_EVENT = 'qcow2.dirty-flag';

export interface CorruptEventData {
  msg: string;
  offset?: number;
  size?: number;
  fatal: boolean;
}

/** Reads entry `i` of a refcount block of width 2^order bits (sub-byte widths are little-endian in the byte). */
export function getRefcount(block: Buffer, i: number, order: number): number {
  switch (order) {
    case 3:
      return block[i]!;
    case 4:
      return block.readUInt16BE(i * 2);
    case 5:
      return block.readUInt32BE(i * 4);
    case 6: {
      const v = block.readBigUInt64BE(i * 8);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      return (block[bit >>> 3]! >>> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

/** The largest refcount a width of 2^order bits holds. */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

export function setRefcount(block: Buffer, i: number, order: number, value: number): void {
  switch (order) {
    case 3:
      block[i] = value;
      return;
    case 4:
      block.writeUInt16BE(value, i * 2);
      return;
    case 5:
      block.writeUInt32BE(value, i * 4);
      return;
    case 6:
      block.writeBigUInt64BE(BigInt(value), i * 8);
      return;
    default: {
      const bits = 1 << order;
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      block[bit >>> 3] = (block[bit >>> 3]! & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}
