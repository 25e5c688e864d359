/**
 * qcow2, I/O half: persistent bitmaps in the image. Before the first write
 * changes the image, every stored bitmap is marked in use (a crash from then
 * on leaves them inconsistent, as it should). When the node closes, or a
 * persistent bitmap is removed, the bitmaps are written out: data clusters,
 * tables and a new directory first, synced; then the header extension points
 * at them in one write; then the old clusters are freed. A crash in between
 * leaks clusters, never leaves the header pointing at half-written data.
 */
import type { SharedDirtyBitmap } from '../../common/shared-dirty-bitmap';
import {
  AUTOCLEAR_BITMAPS,
  BME_FLAG,
  BME_TABLE_OFFSET_MASK,
  BME_TYPE_DIRTY_TRACKING,
  bitmapDataBytes,
  encodeBitmapsExtension,
  encodeDirectory,
  parseBitmapsExtension,
  parseDirectory,
  type BitmapDirEntry,
  type BitmapsExtension,
} from './bitmaps-format';
import { EXT, HDR, parseExtensions, parseHeader } from './common';
import type { Qcow2Image } from './io-image';

interface Directory {
  ext?: BitmapsExtension;
  entries: BitmapDirEntry[];
}

async function readHeaderCluster(img: Qcow2Image): Promise<Buffer> {
  const buf = Buffer.alloc(img.cs);
  await img.readFile(0, buf);
  return buf;
}

/** The directory the image holds now, when its extension is marked consistent. */
async function readDirectory(img: Qcow2Image): Promise<Directory> {
  if (!(img.autoclear & AUTOCLEAR_BITMAPS)) return { entries: [] };
  const first = await readHeaderCluster(img);
  const h = parseHeader(first);
  const raw = parseExtensions(first, h).find((e) => e.type === EXT.BITMAPS);
  if (!raw) return { entries: [] };
  const ext = parseBitmapsExtension(raw.data);
  const dir = Buffer.alloc(ext.directorySize);
  await img.readFile(ext.directoryOffset, dir);
  return { ext, entries: parseDirectory(dir, ext.nbBitmaps, img.cs) };
}

/** Sets in_use on every stored bitmap, in place, and syncs: called before the first write. */
export async function markBitmapsInUse(img: Qcow2Image): Promise<void> {
  const { ext, entries } = await readDirectory(img);
  if (!ext || entries.every((e) => e.flags & BME_FLAG.IN_USE)) return;
  for (const e of entries) e.flags |= BME_FLAG.IN_USE;
  await img.writeMetadata(ext.directoryOffset, encodeDirectory(entries));
}

/** Writes one bitmap's data clusters and table; returns its directory entry. */
async function writeBitmap(img: Qcow2Image, bm: SharedDirtyBitmap, closing: boolean): Promise<BitmapDirEntry> {
  const cs = img.cs;
  const data = bm.serialize().subarray(0, bitmapDataBytes(bm.length, bm.granularity));
  const tableSize = Math.ceil(data.length / cs);
  const table = Buffer.alloc(tableSize * 8);
  for (let i = 0; i < tableSize; i++) {
    const piece = data.subarray(i * cs, (i + 1) * cs);
    if (piece.every((b) => b === 0)) continue;
    const off = await img.allocClusters(1);
    const cluster = Buffer.alloc(cs);
    piece.copy(cluster);
    await img.writeFile(off, cluster);
    table.writeBigUInt64BE(BigInt(off), i * 8);
  }
  const tableOffset = await writeClusters(img, table);
  const state = bm.state;
  return {
    tableOffset,
    tableSize,
    flags: (closing ? 0 : BME_FLAG.IN_USE) | (bm.recording ? BME_FLAG.AUTO : 0),
    type: BME_TYPE_DIRTY_TRACKING,
    granularityBits: Math.log2(bm.granularity),
    name: state.name!,
    extraData: Buffer.alloc(0),
  };
}

/** Writes `buf` into newly allocated contiguous clusters. */
async function writeClusters(img: Qcow2Image, buf: Buffer): Promise<number> {
  const clusters = Math.max(1, Math.ceil(buf.length / img.cs));
  const off = await img.allocClusters(clusters);
  const padded = Buffer.alloc(clusters * img.cs);
  buf.copy(padded);
  await img.writeFile(off, padded);
  return off;
}

/** Queues the clusters of a stored bitmap (data, then table) for freeing. */
async function freeBitmapClusters(img: Qcow2Image, e: BitmapDirEntry): Promise<void> {
  const table = Buffer.alloc(e.tableSize * 8);
  await img.readFile(e.tableOffset, table);
  for (let i = 0; i < e.tableSize; i++) {
    const off = table.readBigUInt64BE(i * 8) & BME_TABLE_OFFSET_MASK;
    if (off) img.queueFree(off);
  }
  freeRange(img, e.tableOffset, table.length);
}

function freeRange(img: Qcow2Image, offset: number, bytes: number): void {
  const clusters = Math.max(1, Math.ceil(bytes / img.cs));
  for (let c = 0; c < clusters; c++) img.queueFree(BigInt(offset + c * img.cs));
}

/**
 * Stores the node's persistent bitmaps. Inconsistent ones keep their old
 * entry (still in use) until removed; `closing` clears in_use on the others.
 */
export async function storeBitmaps(img: Qcow2Image, bitmaps: readonly SharedDirtyBitmap[], closing: boolean): Promise<void> {
  const old = await readDirectory(img);
  const persistent = bitmaps.filter((b) => b.state.persistent);
  if (persistent.length === 0 && !old.ext) return;
  await img.prepareWrite();
  const keptNames = new Set(persistent.filter((b) => b.state.inconsistent).map((b) => b.state.name));
  // QEMU's order: bitmaps already in the directory keep their places, new ones follow as the node lists them.
  const byName = new Map(persistent.map((b) => [b.state.name, b]));
  const entries: BitmapDirEntry[] = [];
  for (const e of old.entries) {
    const bm = byName.get(e.name);
    if (!bm) continue;
    byName.delete(e.name);
    entries.push(bm.state.inconsistent ? e : await writeBitmap(img, bm, closing));
  }
  for (const bm of byName.values()) if (!bm.state.inconsistent) entries.push(await writeBitmap(img, bm, closing));
  let ext: BitmapsExtension | undefined;
  if (entries.length > 0) {
    const dir = encodeDirectory(entries);
    ext = { nbBitmaps: entries.length, directorySize: dir.length, directoryOffset: await writeClusters(img, dir) };
  }
  await img.flushAll();
  await rewriteBitmapsExtension(img, ext);
  for (const e of old.entries) if (!keptNames.has(e.name)) await freeBitmapClusters(img, e);
  if (old.ext) freeRange(img, old.ext.directoryOffset, old.ext.directorySize);
  await img.flushAll();
}

/** Rewrites the first cluster with the bitmaps extension replaced (or dropped), and autoclear bit 0 to match. */
async function rewriteBitmapsExtension(img: Qcow2Image, ext: BitmapsExtension | undefined): Promise<void> {
  const first = await readHeaderCluster(img);
  const h = parseHeader(first);
  const exts = parseExtensions(first, h).filter((e) => e.type !== EXT.BITMAPS);
  const parts: Buffer[] = [];
  const push = (type: number, data: Uint8Array): void => {
    const b = Buffer.alloc(8 + ((data.length + 7) & ~7));
    b.writeUInt32BE(type, 0);
    b.writeUInt32BE(data.length, 4);
    Buffer.from(data).copy(b, 8);
    parts.push(b);
  };
  for (const e of exts) push(e.type, e.data);
  if (ext) push(EXT.BITMAPS, encodeBitmapsExtension(ext));
  parts.push(Buffer.alloc(8));
  const extBytes = Buffer.concat(parts);
  const out = Buffer.alloc(img.cs);
  first.copy(out, 0, 0, h.headerLength);
  extBytes.copy(out, h.headerLength);
  let end = h.headerLength + extBytes.length;
  if (h.backingFileOffset !== 0) {
    const name = first.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize);
    if (end + name.length > img.cs) throw new Error('qcow2 header extensions do not fit in the first cluster');
    name.copy(out, end);
    out.writeBigUInt64BE(BigInt(end), HDR.backingFileOffset);
    end += name.length;
  }
  if (end > img.cs) throw new Error('qcow2 header extensions do not fit in the first cluster');
  const autoclear = ext ? img.autoclear | AUTOCLEAR_BITMAPS : img.autoclear & ~AUTOCLEAR_BITMAPS;
  out.writeBigUInt64BE(autoclear, HDR.autoclearFeatures);
  await img.writeMetadata(0, out);
  img.autoclear = autoclear;
}
