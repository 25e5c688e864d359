/**
 * qcow2's bitmaps extension, on-disk layout (`docs/interop/qcow2.txt`,
 * "Bitmaps extension"): the extension data, the bitmap directory, bitmap
 * tables. Pure code shared by the GS half (loading at open) and the I/O half
 * (marking bitmaps in use, storing them at close).
 */
import { Qcow2FormatError } from './common';

/** Autoclear bit 0: the bitmaps extension is consistent with the image. */
export const AUTOCLEAR_BITMAPS = 1n;

export const BME_FLAG = {
  IN_USE: 1,
  AUTO: 2,
  EXTRA_DATA_COMPATIBLE: 4,
} as const;
const BME_FLAGS_KNOWN = BME_FLAG.IN_USE | BME_FLAG.AUTO | BME_FLAG.EXTRA_DATA_COMPATIBLE;
export const BME_TYPE_DIRTY_TRACKING = 1;
/** Bitmap table entry: bits 9-55 hold the data cluster's offset; bit 0 with offset 0 means all ones. */
export const BME_TABLE_OFFSET_MASK = 0x00fffffffffffe00n;
export const BME_TABLE_ALL_ONES = 1n;

/** QEMU's limits. */
export const MAX_BITMAPS = 65535;
export const MAX_DIRECTORY_BYTES = 64 * MAX_BITMAPS * 2;
export const MIN_GRANULARITY_BITS = 9;
export const MAX_GRANULARITY_BITS = 31;
export const MAX_BITMAP_NAME = 1023;
/** QEMU's BME_MAX_PHYS_SIZE: the most bitmap data one bitmap may take. */
export const MAX_BITMAP_DATA_BYTES = 0x20000000;
const DIR_ENTRY_FIXED = 24;
export const BITMAPS_EXT_LENGTH = 24;

export interface BitmapsExtension {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

export function parseBitmapsExtension(data: Uint8Array): BitmapsExtension {
  if (data.length < BITMAPS_EXT_LENGTH) throw new Qcow2FormatError('bitmaps_ext: Invalid extension length');
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const ext = {
    nbBitmaps: b.readUInt32BE(0),
    directorySize: Number(b.readBigUInt64BE(8)),
    directoryOffset: Number(b.readBigUInt64BE(16)),
  };
  if (b.readUInt32BE(4) !== 0) throw new Qcow2FormatError('bitmaps_ext: Reserved field is not zero');
  if (ext.nbBitmaps > MAX_BITMAPS) throw new Qcow2FormatError('bitmaps_ext: Image has too many bitmaps');
  if (ext.nbBitmaps === 0) throw new Qcow2FormatError('found bitmaps extension with zero bitmaps');
  if (ext.directorySize > MAX_DIRECTORY_BYTES) throw new Qcow2FormatError('bitmaps_ext: bitmap directory size is too large');
  return ext;
}

export function encodeBitmapsExtension(ext: BitmapsExtension): Buffer {
  const b = Buffer.alloc(BITMAPS_EXT_LENGTH);
  b.writeUInt32BE(ext.nbBitmaps, 0);
  b.writeBigUInt64BE(BigInt(ext.directorySize), 8);
  b.writeBigUInt64BE(BigInt(ext.directoryOffset), 16);
  return b;
}

export interface BitmapDirEntry {
  tableOffset: number;
  /** Entries of the bitmap table. */
  tableSize: number;
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraData: Buffer;
}

function entrySize(nameBytes: number, extraBytes: number): number {
  return (DIR_ENTRY_FIXED + nameBytes + extraBytes + 7) & ~7;
}

/** Parses and checks the directory as QEMU's check_dir_entry() does. */
export function parseDirectory(buf: Buffer, count: number, clusterSize: number): BitmapDirEntry[] {
  const out: BitmapDirEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + DIR_ENTRY_FIXED > buf.length) throw new Qcow2FormatError('Broken bitmap directory');
    const nameSize = buf.readUInt16BE(at + 18);
    const extraSize = buf.readUInt32BE(at + 20);
    const size = entrySize(nameSize, extraSize);
    if (at + size > buf.length) throw new Qcow2FormatError('Broken bitmap directory');
    const e: BitmapDirEntry = {
      tableOffset: Number(buf.readBigUInt64BE(at)),
      tableSize: buf.readUInt32BE(at + 8),
      flags: buf.readUInt32BE(at + 12),
      type: buf[at + 16]!,
      granularityBits: buf[at + 17]!,
      extraData: Buffer.from(buf.subarray(at + DIR_ENTRY_FIXED, at + DIR_ENTRY_FIXED + extraSize)),
      name: buf.toString('utf8', at + DIR_ENTRY_FIXED + extraSize, at + DIR_ENTRY_FIXED + extraSize + nameSize),
    };
    if (
      e.type !== BME_TYPE_DIRTY_TRACKING ||
      e.granularityBits < MIN_GRANULARITY_BITS ||
      e.granularityBits > MAX_GRANULARITY_BITS ||
      nameSize === 0 ||
      nameSize > MAX_BITMAP_NAME ||
      e.flags & ~BME_FLAGS_KNOWN ||
      e.tableOffset % clusterSize !== 0 ||
      (extraSize !== 0 && !(e.flags & BME_FLAG.EXTRA_DATA_COMPATIBLE))
    ) {
      throw new Qcow2FormatError(`Bitmap '${e.name}' doesn't satisfy the constraints`);
    }
    out.push(e);
    at += size;
  }
  return out;
}

export function encodeDirectory(entries: BitmapDirEntry[]): Buffer {
  const parts = entries.map((e) => {
    const name = Buffer.from(e.name, 'utf8');
    const b = Buffer.alloc(entrySize(name.length, e.extraData.length));
    b.writeBigUInt64BE(BigInt(e.tableOffset), 0);
    b.writeUInt32BE(e.tableSize, 8);
    b.writeUInt32BE(e.flags, 12);
    b[16] = e.type;
    b[17] = e.granularityBits;
    b.writeUInt16BE(name.length, 18);
    b.writeUInt32BE(e.extraData.length, 20);
    e.extraData.copy(b, DIR_ENTRY_FIXED);
    name.copy(b, DIR_ENTRY_FIXED + e.extraData.length);
    return b;
  });
  return Buffer.concat(parts);
}

/** Bytes of bitmap data for an image of `length` bytes: one bit a chunk, rounded up to a byte. */
export function bitmapDataBytes(length: number, granularity: number): number {
  return Math.ceil(Math.ceil(length / granularity) / 8);
}

/** Entries of the bitmap table: one per cluster of data. */
export function bitmapTableEntries(length: number, granularity: number, clusterSize: number): number {
  return Math.ceil(bitmapDataBytes(length, granularity) / clusterSize);
}
