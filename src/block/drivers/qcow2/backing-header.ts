/**
 * qcow2, common part: the first cluster with a new backing file name and
 * format, as `qcow2.txt` lays it out — the header unchanged but for the
 * backing name's offset and size, the header extensions with the backing
 * format extension replaced (every other extension kept, in order), the end
 * marker, then the name, all inside the first cluster. Pure code.
 */
import { EXT, HDR, MAX_BACKING_NAME, parseExtensions, parseHeader, Qcow2FormatError } from './common';

const pad8 = (n: number): number => (n + 7) & ~7;

/**
 * Returns the new first cluster (`first` holds the current one, at least up
 * to its backing name). `name` undefined removes the backing file; `format`
 * is recorded only with a name, as QEMU does.
 */
export function headerWithBacking(first: Buffer, name: string | undefined, format: string | undefined): Buffer {
  const h = parseHeader(first);
  const clusterSize = 2 ** h.clusterBits;
  const nameBytes = name === undefined ? Buffer.alloc(0) : Buffer.from(name, 'utf8');
  if (nameBytes.length > MAX_BACKING_NAME) throw new Qcow2FormatError('Backing file name too long');
  const exts = parseExtensions(first, h).filter((e) => e.type !== EXT.BACKING_FORMAT);
  if (name !== undefined && format !== undefined && format !== '') exts.unshift({ type: EXT.BACKING_FORMAT, data: Buffer.from(format, 'utf8') });

  const extBytes = exts.reduce((n, e) => n + 8 + pad8(e.data.length), 0) + 8;
  const nameAt = h.headerLength + extBytes;
  const end = nameAt + nameBytes.length;
  if (end > clusterSize) throw new Qcow2FormatError('Header extensions and backing file name do not fit in the first cluster');

  const out = Buffer.alloc(Math.max(end, Math.min(clusterSize, first.length)));
  first.copy(out, 0, 0, h.headerLength);
  let at = h.headerLength;
  for (const e of exts) {
    out.writeUInt32BE(e.type, at);
    out.writeUInt32BE(e.data.length, at + 4);
    Buffer.from(e.data).copy(out, at + 8);
    at += 8 + pad8(e.data.length);
  }
  // The end marker: eight zero bytes, already there.
  nameBytes.copy(out, nameAt);
  out.writeBigUInt64BE(BigInt(nameBytes.length === 0 ? 0 : nameAt), HDR.backingFileOffset);
  out.writeUInt32BE(nameBytes.length, HDR.backingFileSize);
  return out;
}
