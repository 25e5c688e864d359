/**
 * The internal snapshot table of a qcow2 image (docs/interop/qcow2.txt,
 * "Snapshots"): parsing it (at open, for queries, and by the I/O half that
 * rewrites it) and encoding a new one. Pure code: no I/O of its own, no
 * global state.
 */
import type { InternalSnapshotInfo } from '../../common/internal-snapshot';
import { Qcow2FormatError } from './common';

/** SnapshotInfo, members in the schema's order. */
export type SnapshotInfo = InternalSnapshotInfo;

/** One entry as the image stores it. */
export interface SnapshotEntry {
  l1Offset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  /** Nanoseconds; a bigint, as the field is 64 bits wide. */
  vmClockNsec: bigint;
  vmStateSize: number;
  /** The guest size when the snapshot was taken. */
  diskSize: number;
  /** All ones: none recorded. */
  icount: bigint;
  /** Extra data past the fields qbd knows, kept as it was (the format says: ignore, preserve). */
  unknownExtra: Buffer;
}

/** Fixed part of an entry, before its extra data, id and name. */
const ENTRY_HEADER = 40;
/** The extra data this version writes: large VM state size, disk size, icount. */
const KNOWN_EXTRA = 24;
/** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA and QCOW_MAX_SNAPSHOTS_SIZE. */
const MAX_EXTRA_DATA = 1024;
export const MAX_TABLE_BYTES = 64 << 20;
/** QEMU's QCOW_MAX_SNAPSHOTS. */
export const MAX_SNAPSHOTS = 65536;
export const NO_ICOUNT = 0xffffffffffffffffn;

/** Reads `bytes` at `offset` of the image file; shorter at its end. */
export type FileReader = (offset: number, bytes: number) => Promise<Buffer>;

/**
 * The `count` entries of the table at `offset`. `imageSize` stands in for
 * the disk size of entries that do not record one (older writers).
 */
export async function readSnapshotEntries(read: FileReader, offset: number, count: number, imageSize: number): Promise<{ entries: SnapshotEntry[]; bytes: number }> {
  const out: SnapshotEntry[] = [];
  // Entries are variable-sized: read in chunks and fetch more when one runs past the chunk.
  let chunk: Buffer = Buffer.alloc(0);
  let chunkStart = offset;
  const bytesAt = async (at: number, n: number): Promise<Buffer> => {
    if (at - offset + n > MAX_TABLE_BYTES) throw new Qcow2FormatError('Snapshot table is too big');
    if (at < chunkStart || at + n > chunkStart + chunk.length) {
      chunkStart = at;
      chunk = await read(at, Math.max(n, 64 << 10));
      if (chunk.length < n) throw new Qcow2FormatError('Snapshot table runs past the end of the image file');
    }
    return chunk.subarray(at - chunkStart, at - chunkStart + n);
  };
  let at = offset;
  for (let i = 0; i < count; i++) {
    const head = await bytesAt(at, ENTRY_HEADER);
    const idSize = head.readUInt16BE(12);
    const nameSize = head.readUInt16BE(14);
    const extraSize = head.readUInt32BE(36);
    if (extraSize > MAX_EXTRA_DATA) throw new Qcow2FormatError(`Too much extra metadata in snapshot table entry ${i}`);
    const rest = Buffer.from(await bytesAt(at + ENTRY_HEADER, extraSize + idSize + nameSize));
    const extra = rest.subarray(0, extraSize);
    const l1Offset = head.readBigUInt64BE(0);
    if (l1Offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new Qcow2FormatError(`Snapshot L1 table offset invalid in entry ${i}`);
    out.push({
      l1Offset: Number(l1Offset),
      l1Size: head.readUInt32BE(8),
      id: rest.subarray(extraSize, extraSize + idSize).toString('utf8'),
      name: rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString('utf8'),
      dateSec: head.readUInt32BE(16),
      dateNsec: head.readUInt32BE(20),
      vmClockNsec: head.readBigUInt64BE(24),
      vmStateSize: extra.length >= 8 ? Number(extra.readBigUInt64BE(0)) : head.readUInt32BE(32),
      diskSize: extra.length >= 16 ? Number(extra.readBigUInt64BE(8)) : imageSize,
      icount: extra.length >= 24 ? extra.readBigUInt64BE(16) : NO_ICOUNT,
      unknownExtra: Buffer.from(extra.subarray(Math.min(extra.length, KNOWN_EXTRA))),
    });
    // Each entry is padded to a multiple of 8 bytes.
    at += Math.ceil((ENTRY_HEADER + extraSize + idSize + nameSize) / 8) * 8;
  }
  return { entries: out, bytes: at - offset };
}

/** What queries and blockdev-snapshot-delete-internal-sync show of an entry. */
export function snapshotInfo(e: SnapshotEntry): SnapshotInfo {
  const info: SnapshotInfo = {
    id: e.id,
    name: e.name,
    'vm-state-size': e.vmStateSize,
    'date-sec': e.dateSec,
    'date-nsec': e.dateNsec,
    'vm-clock-sec': Number(e.vmClockNsec / 1_000_000_000n),
    'vm-clock-nsec': Number(e.vmClockNsec % 1_000_000_000n),
  };
  if (e.icount !== NO_ICOUNT) info.icount = Number(e.icount);
  return info;
}

/** The `count` entries of the table at `offset`, as SnapshotInfo. */
export async function readSnapshotTable(read: FileReader, offset: number, count: number): Promise<SnapshotInfo[]> {
  return (await readSnapshotEntries(read, offset, count, 0)).entries.map(snapshotInfo);
}

/**
 * The table holding `entries`, as this version writes it: every entry with
 * the three known extra fields (so v3's minimum is met), then what it had
 * past them.
 */
export function encodeSnapshotTable(entries: readonly SnapshotEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const id = Buffer.from(e.id, 'utf8');
    const name = Buffer.from(e.name, 'utf8');
    const extraSize = KNOWN_EXTRA + e.unknownExtra.length;
    const size = Math.ceil((ENTRY_HEADER + extraSize + id.length + name.length) / 8) * 8;
    const b = Buffer.alloc(size);
    b.writeBigUInt64BE(BigInt(e.l1Offset), 0);
    b.writeUInt32BE(e.l1Size, 8);
    b.writeUInt16BE(id.length, 12);
    b.writeUInt16BE(name.length, 14);
    b.writeUInt32BE(e.dateSec, 16);
    b.writeUInt32BE(e.dateNsec, 20);
    b.writeBigUInt64BE(e.vmClockNsec, 24);
    // The 32-bit field keeps what fits; the extra data holds the full size.
    b.writeUInt32BE(e.vmStateSize > 0xffffffff ? 0 : e.vmStateSize, 32);
    b.writeUInt32BE(extraSize, 36);
    b.writeBigUInt64BE(BigInt(e.vmStateSize), 40);
    b.writeBigUInt64BE(BigInt(e.diskSize), 48);
    b.writeBigUInt64BE(e.icount, 56);
    e.unknownExtra.copy(b, ENTRY_HEADER + KNOWN_EXTRA);
    id.copy(b, ENTRY_HEADER + extraSize);
    name.copy(b, ENTRY_HEADER + extraSize + id.length);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/**
 * The id of a new snapshot: one more than the largest numeric id in use
 * (ids that are not numbers count as 0), as QEMU numbers them.
 */
export function nextSnapshotId(entries: readonly { id: string }[]): string {
  let max = 0;
  for (const e of entries) {
    // Leading digits count, as C's strtoul reads them.
    const n = Number.parseInt(e.id, 10) || 0;
    if (n > max) max = n;
  }
  return String(max + 1);
}
