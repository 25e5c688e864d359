/**
 * qcow2, I/O half: writing compressed clusters (a job's `compress: true`).
 * Each whole guest cluster is deflated (raw deflate with a 4 KiB window,
 * which is what QEMU's reader inflates), packed byte-wise after the
 * previous compressed cluster, and mapped with a compressed L2 descriptor
 * once its bytes are on disk. A cluster that does not shrink, and the
 * partial clusters of an unaligned request, are written normally.
 */
import * as zlib from 'node:zlib';
import type { Qcow2Image } from './io-image';

/** QEMU deflates with a window of 2^12 bytes; a larger window would not inflate there. */
const DEFLATE_OPTIONS: zlib.ZlibOptions = { windowBits: 12, memLevel: 9, level: zlib.constants.Z_DEFAULT_COMPRESSION };

function deflate(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => zlib.deflateRaw(data, DEFLATE_OPTIONS, (err, out) => (err ? reject(err) : resolve(out))));
}

/** Writes one compressed cluster at guest `pos` (cluster-aligned); returns false when it does not shrink. */
async function writeCompressedCluster(img: Qcow2Image, pos: number, cluster: Buffer): Promise<boolean> {
  const packed = await deflate(cluster);
  if (packed.length >= img.cs) return false;
  const host = await img.allocCompressedBytes(packed.length);
  await img.checkOverlap(host, packed.length);
  await img.writeFile(host, packed);
  const l2Off = await img.l2ForWrite(Math.floor(pos / img.l2Span));
  const idx = Math.floor(pos / img.cs) % img.g.l2Entries;
  const prev = await img.setL2Entries(l2Off, idx, [img.compressedEntry(host, packed.length)]);
  for (const old of prev) img.queueFree(old);
  return true;
}

/**
 * The compressed write path, with the guest range held. `plain` writes a
 * piece normally; `length` is the guest size (a last partial cluster is
 * compressed padded with zeros, as QEMU does).
 */
export async function writeCompressedLocked(img: Qcow2Image, length: number, offset: number, buf: Buffer, plain: (pos: number, data: Buffer) => Promise<void>): Promise<void> {
  const cs = img.cs;
  let done = 0;
  while (done < buf.length) {
    const pos = offset + done;
    const left = buf.length - done;
    const whole = pos % cs === 0 && (left >= cs || pos + left === length);
    const n = whole ? Math.min(cs, left) : Math.min(left, cs - (pos % cs));
    const piece = buf.subarray(done, done + n);
    let compressed = false;
    if (whole) {
      const cluster = n === cs ? piece : Buffer.concat([piece, Buffer.alloc(cs - n)]);
      compressed = await writeCompressedCluster(img, pos, cluster);
    }
    if (!compressed) await plain(pos, piece);
    done += n;
  }
}
