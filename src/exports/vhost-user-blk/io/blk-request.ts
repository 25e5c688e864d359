/**
 * virtio-blk requests (virtio 1.1, 5.2.6) against the exported node: a
 * chain's readable part starts with the request header, its writable part
 * ends with the status byte. Requests the device cannot do get a status,
 * as the reference answers them: IOERR for ranges past the end or not
 * aligned to the logical block size and for failed I/O, UNSUPP for unknown
 * types and flags.
 */
import type { IoBackend } from '../../../block/io/backend';
import { releaseReadBuffer, takeReadBuffer } from '../../read-buffers';
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
/**
 * Scattered requests move through the node in pieces of at most this much:
 * whatever sizes a guest asks for, a request never holds more of qbd's
 * memory than one piece.
 */
const PIECE = 4 * 1024 * 1024;

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

/** The pieces of a scattered buffer covering [from, from + length), as views. */
function slice(bufs: Buffer[], from: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (length <= 0) break;
    if (from >= b.length) {
      from -= b.length;
      continue;
    }
    const piece = b.subarray(from, Math.min(b.length, from + length));
    out.push(piece);
    length -= piece.length;
    from = 0;
  }
  return out;
}

/** Copies `src` over the scattered buffer `dst` from its byte `at` on, as far as it reaches. */
function scatter(dst: Buffer[], src: Buffer, at = 0): void {
  let pos = 0;
  for (const b of dst) {
    if (pos >= src.length) break;
    if (at >= b.length) {
      at -= b.length;
      continue;
    }
    pos += src.copy(b, at, pos);
    at = 0;
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
  // One guest buffer takes the data directly.
  if (dest.length === 1) return dev.backend.read(offset, dest[0].subarray(0, length));
  // Several go through a reused bounce buffer (fresh memory costs a page fault per page), a piece at a time.
  for (let done = 0; done < length; done += PIECE) {
    const n = Math.min(PIECE, length - done);
    const bounce = takeReadBuffer(n);
    await dev.backend.read(offset + done, bounce);
    scatter(dest, bounce, done);
    releaseReadBuffer(bounce);
  }
}

async function writeFrom(dev: BlkDevice, offset: number, src: Buffer[], length: number): Promise<void> {
  for (let done = 0; done < length; done += PIECE) {
    const n = Math.min(PIECE, length - done);
    // A copy: the guest may change its buffers while the write is under way, and the node may keep what it is given.
    const piece = gather(src, done, n);
    await dev.backend.write(offset + done, piece, { fua: dev.writethrough });
    releaseReadBuffer(piece);
  }
}

/** One discard or write-zeroes request: a single segment, as the reference takes it. */
async function zeroOrDiscard(dev: BlkDevice, type: number, out: Buffer[], outLength: number): Promise<number> {
  if (outLength > P.BLK_SEGMENT_SIZE) return P.BLK_S_UNSUPP;
  if (outLength < P.BLK_SEGMENT_SIZE) return P.BLK_S_IOERR;
  const seg = gather(out, 0, P.BLK_SEGMENT_SIZE);
  const sector = seg.readBigUInt64LE(0);
  const sectors = seg.readUInt32LE(8);
  const flags = seg.readUInt32LE(12);
  releaseReadBuffer(seg);
  const allowed = type === P.BLK_T.WRITE_ZEROES ? P.BLK_WRITE_ZEROES_F_UNMAP : 0;
  if (flags & ~allowed) return P.BLK_S_UNSUPP;
  if (!rangeOk(dev, sector, sectors * P.SECTOR)) return P.BLK_S_IOERR;
  const offset = Number(sector) * P.SECTOR;
  const bytes = sectors * P.SECTOR;
  if (type === P.BLK_T.DISCARD) await dev.backend.discard(offset, bytes);
  else await dev.backend.writeZeroes(offset, bytes, { mayUnmap: (flags & P.BLK_WRITE_ZEROES_F_UNMAP) !== 0, fua: dev.writethrough });
  return P.BLK_S_OK;
}

/** A request's buffers: what the guest wrote after the header, and where the device writes before the status byte. */
interface RequestBuffers {
  out: Buffer[];
  outLength: number;
  dataIn: Buffer[];
  dataInLength: number;
}

async function execute(dev: BlkDevice, type: number, sector: bigint, bufs: RequestBuffers): Promise<number> {
  switch (type) {
    case P.BLK_T.IN: {
      if (!rangeOk(dev, sector, bufs.dataInLength)) return P.BLK_S_IOERR;
      if (bufs.dataInLength > 0) await readInto(dev, Number(sector) * P.SECTOR, bufs.dataIn, bufs.dataInLength);
      return P.BLK_S_OK;
    }
    case P.BLK_T.OUT: {
      if (!dev.writable || !rangeOk(dev, sector, bufs.outLength)) return P.BLK_S_IOERR;
      await writeFrom(dev, Number(sector) * P.SECTOR, bufs.out, bufs.outLength);
      return P.BLK_S_OK;
    }
    case P.BLK_T.FLUSH:
      await dev.backend.flush();
      return P.BLK_S_OK;
    case P.BLK_T.GET_ID:
      scatter(bufs.dataIn, SERIAL.subarray(0, Math.min(SERIAL.length, P.BLK_ID_BYTES, bufs.dataInLength)));
      return P.BLK_S_OK;
    case P.BLK_T.DISCARD:
    case P.BLK_T.WRITE_ZEROES:
      if (!dev.writable) return P.BLK_S_IOERR;
      return zeroOrDiscard(dev, type, bufs.out, bufs.outLength);
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
  releaseReadBuffer(header);
  const bufs: RequestBuffers = {
    out: slice(readable, P.BLK_REQ_HEADER, outLength - P.BLK_REQ_HEADER),
    outLength: outLength - P.BLK_REQ_HEADER,
    dataIn: slice(writable, 0, inLength - 1),
    dataInLength: inLength - 1,
  };
  let status: number;
  try {
    status = await execute(dev, type, sector, bufs);
  } catch {
    status = P.BLK_S_IOERR;
  }
  const last = writable[writable.length - 1];
  last[last.length - 1] = status;
  return inLength;
}
