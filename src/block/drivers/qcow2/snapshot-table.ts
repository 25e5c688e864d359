/**
 * The internal snapshot table of a qcow2 image (docs/interop/qcow2.txt,
 * "Snapshots"), read at open for queries: each entry's id, name, sizes and
 * times, as QEMU's SnapshotInfo reports them. qbd does not create, apply or
 * delete internal snapshots; it keeps the clusters they share intact.
 */
import { Qcow2FormatError } from './common';

/** SnapshotInfo, members in the schema's order. */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/** Fixed part of an entry, before its extra data, id and name. */
const ENTRY_HEADER = 40;
/** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA and QCOW_MAX_SNAPSHOTS_SIZE. */
const MAX_EXTRA_DATA = 1024;
const MAX_TABLE_BYTES = 64 << 20;
const NO_ICOUNT = 0xffffffffffffffffn;

/** Reads `bytes` at `offset` of the image file; shorter at its end. */
export type FileReader = (offset: number, bytes: number) => Promise<Buffer>;

/** The `count` entries of the table at `offset`. */
export async function readSnapshotTable(read: FileReader, offset: number, count: number): Promise<SnapshotInfo[]> {
  const out: SnapshotInfo[] = [];
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
    const rest = await bytesAt(at + ENTRY_HEADER, extraSize + idSize + nameSize);
    const extra = rest.subarray(0, extraSize);
    const vmClock = head.readBigUInt64BE(24);
    const icount = extra.length >= 24 ? extra.readBigUInt64BE(16) : NO_ICOUNT;
    const info: SnapshotInfo = {
      id: rest.subarray(extraSize, extraSize + idSize).toString('utf8'),
      name: rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString('utf8'),
      'vm-state-size': extra.length >= 8 ? Number(extra.readBigUInt64BE(0)) : head.readUInt32BE(32),
      'date-sec': head.readUInt32BE(16),
      'date-nsec': head.readUInt32BE(20),
      'vm-clock-sec': Number(vmClock / 1_000_000_000n),
      'vm-clock-nsec': Number(vmClock % 1_000_000_000n),
    };
    if (icount !== NO_ICOUNT) info.icount = Number(icount);
    out.push(info);
    // Each entry is padded to a multiple of 8 bytes.
    at += Math.ceil((ENTRY_HEADER + extraSize + idSize + nameSize) / 8) * 8;
  }
  return out;
}
