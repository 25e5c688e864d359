/**
 * virtio-blk requests (virtio 1.1, 5.2.6) against the exported node: a
 * chain's readable part starts with the request header, its writable part
 * ends with the status byte. Requests the device cannot do get a status,
 * as the reference answers them: IOERR for ranges past the end or not
 * aligned to the logical block size and for failed I/O, UNSUPP for unknown
 * types and flags.
 */
import type { IoBackend } from '../../../block/io/backend';
import { releaseReadBuffer, takeReadBuffer } from '../../nbd/read-buffers';
import * as P from '../protocol';

export interface BlkDevice {
  backend: IoBackend;
  writable: boolean;
  writethrough: boolean;
  logicalBlockSize: number;
}

/** What the reference says to GET_ID: the serial, NUL-terminated when it fits. */
const SERIAL = Buffer.from('vhost_user_blk\0', 'latin1');
/** The most sectors one request may cover (QEMU's BDRV_REQUEST_MAX_SECTORS). */
const MAX_REQUEST_SECTORS = Math.floor(2147483647 / P.SECTOR) - 1;
const TYPE_BARRIER = 0x80000000;

function totalLength(bufs: Buffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** The bytes [from, from + length) of a scattered buffer, copied out (into a pooled buffer: hand it back once done). */
function gather(bufs: Buffer[], from: number, length: number): Buffer {
  const out = takeReadBuffer(length);
  let pos = 0;
  for (const b of bufs) {
    if (pos >= length) break;
    if (from >= b.length) {
      from -= b.length;
      continue;
    }
    pos += b.copy(out, pos, from, Math.min(b.length, from + length - pos));
    from = 0;
  }
  return out;
}

/** The pieces of a scattered buffer covering [0, length). */
function prefix(bufs: Buffer[], length: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (length <= 0) break;
    out.push(b.length <= length ? b : b.subarray(0, length));
    length -= b.length;
  }
  return out;
}

/** Copies `src` over the scattered buffer `dst`, as far as it reaches. */
function scatter(dst: Buffer[], src: Buffer): void {
  let pos = 0;
  for (const b of dst) {
    if (pos >= src.length) break;
    pos += src.copy(b, 0, pos);
  }
}

/** virtio_blk's check: whole 512-byte sectors, a start on a logical block, inside the disk. */
function rangeOk(dev: BlkDevice, sector: bigint, bytes: number): boolean {
  if (bytes % P.SECTOR !== 0) return false;
  const sectors = bytes / P.SECTOR;
  if (sectors > MAX_REQUEST_SECTORS) return false;
  if ((sector * BigInt(P.SECTOR)) % BigInt(dev.logicalBlockSize) !== 0n) return false;
  const total = BigInt(Math.floor(dev.backend.length / P.SECTOR));
  return sector <= total && BigInt(sectors) <= total - sector;
}

async function readInto(dev: BlkDevice, offset: number, dest: Buffer[], length: number): Promise<void> {
  // One guest buffer takes the data directly; several get a bounce buffer, reused (fresh memory costs a page fault per page).
  if (dest.length === 1 && dest[0].length >= length) return dev.backend.read(offset, dest[0].subarray(0, length));
  const bounce = takeReadBuffer(length);
  await dev.backend.read(offset, bounce);
  scatter(dest, bounce);
  releaseReadBuffer(bounce);
}

/** One discard or write-zeroes request: a single segment, as the reference takes it. */
async function zeroOrDiscard(dev: BlkDevice, type: number, payload: Buffer): Promise<number> {
  const size = payload.length;
  if (size > P.BLK_SEGMENT_SIZE) return P.BLK_S_UNSUPP;
  if (size < P.BLK_SEGMENT_SIZE) return P.BLK_S_IOERR;
  const seg = payload;
  const sector = seg.readBigUInt64LE(0);
  const sectors = seg.readUInt32LE(8);
  const flags = seg.readUInt32LE(12);
  const allowed = type === P.BLK_T.WRITE_ZEROES ? P.BLK_WRITE_ZEROES_F_UNMAP : 0;
  if (flags & ~allowed) return P.BLK_S_UNSUPP;
  if (!rangeOk(dev, sector, sectors * P.SECTOR)) return P.BLK_S_IOERR;
  const offset = Number(sector) * P.SECTOR;
  const bytes = sectors * P.SECTOR;
  if (type === P.BLK_T.DISCARD) await dev.backend.discard(offset, bytes);
  else await dev.backend.writeZeroes(offset, bytes, { mayUnmap: (flags & P.BLK_WRITE_ZEROES_F_UNMAP) !== 0, fua: dev.writethrough });
  return P.BLK_S_OK;
}

async function execute(dev: BlkDevice, type: number, sector: bigint, payload: Buffer, dataIn: Buffer[], dataInLength: number): Promise<number> {
  switch (type) {
    case P.BLK_T.IN: {
      if (!rangeOk(dev, sector, dataInLength)) return P.BLK_S_IOERR;
      if (dataInLength > 0) await readInto(dev, Number(sector) * P.SECTOR, dataIn, dataInLength);
      return P.BLK_S_OK;
    }
    case P.BLK_T.OUT: {
      const length = payload.length;
      if (!dev.writable || !rangeOk(dev, sector, length)) return P.BLK_S_IOERR;
      if (length > 0) await dev.backend.write(Number(sector) * P.SECTOR, payload, { fua: dev.writethrough });
      return P.BLK_S_OK;
    }
    case P.BLK_T.FLUSH:
      await dev.backend.flush();
      return P.BLK_S_OK;
    case P.BLK_T.GET_ID:
      scatter(dataIn, SERIAL.subarray(0, Math.min(SERIAL.length, P.BLK_ID_BYTES, dataInLength)));
      return P.BLK_S_OK;
    case P.BLK_T.DISCARD:
    case P.BLK_T.WRITE_ZEROES:
      if (!dev.writable) return P.BLK_S_IOERR;
      return zeroOrDiscard(dev, type, payload);
    default:
      return P.BLK_S_UNSUPP;
  }
}

/**
 * Serves one request; resolves to the bytes written into the guest's
 * buffers (all its writable bytes, as the reference counts them), or
 * undefined for a chain too short to hold a header and a status byte.
 */
export async function serveBlkRequest(dev: BlkDevice, readable: Buffer[], writable: Buffer[]): Promise<number | undefined> {
  const outLength = totalLength(readable);
  const inLength = totalLength(writable);
  if (outLength < P.BLK_REQ_HEADER || inLength < 1) return undefined;
  const header = gather(readable, 0, P.BLK_REQ_HEADER);
  const type = (header.readUInt32LE(0) & ~TYPE_BARRIER) >>> 0;
  const sector = header.readBigUInt64LE(8);
  // A copy: the guest may change its buffers while a write is under way, and the node may keep what it is given.
  const payload = gather(readable, P.BLK_REQ_HEADER, outLength - P.BLK_REQ_HEADER);
  const dataIn = prefix(writable, inLength - 1);
  let status: number;
  try {
    status = await execute(dev, type, sector, payload, dataIn, inLength - 1);
    releaseReadBuffer(payload);
  } catch {
    // Pieces of a failed request may still be under way: its buffer is left to the collector.
    status = P.BLK_S_IOERR;
  }
  releaseReadBuffer(header);
  const last = writable[writable.length - 1];
  last[last.length - 1] = status;
  return inLength;
}
