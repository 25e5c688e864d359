/**
 * qcow2, GS half: which new persistent bitmaps the image can take, and
 * loading the persistent bitmaps of an image at open. The
 * extension is trusted only when autoclear bit 0 says it is consistent; a
 * bitmap found in use was not stored after its last change (the image was
 * not closed cleanly) and is loaded as inconsistent, without its bits.
 */
import type { OpenContext } from '../../global-state/driver-gs';
import type { BlockNode } from '../../global-state/block-node';
import { SharedDirtyBitmap, type StoredBitmap } from '../../common/shared-dirty-bitmap';
import {
  AUTOCLEAR_BITMAPS,
  BME_FLAG,
  BME_TABLE_ALL_ONES,
  BME_TABLE_OFFSET_MASK,
  bitmapDataBytes,
  bitmapTableEntries,
  MAX_BITMAP_DATA_BYTES,
  MAX_BITMAP_NAME,
  MAX_BITMAPS,
  MAX_GRANULARITY_BITS,
  MIN_GRANULARITY_BITS,
  parseBitmapsExtension,
  parseDirectory,
} from './bitmaps-format';
import { EXT, type HeaderExtension, Qcow2FormatError, type Qcow2Header } from './common';

async function read(ctx: OpenContext, file: BlockNode, offset: number, bytes: number): Promise<Buffer> {
  if (offset + bytes > file.length) throw new Qcow2FormatError('Bitmap data is beyond the end of the image file');
  const { data } = await ctx.childRequest(file, { op: 'read', offset, bytes });
  return Buffer.from(data!.buffer, data!.byteOffset, data!.byteLength);
}

/** QEMU's qcow2_co_can_store_new_dirty_bitmap() constraints: why a new persistent bitmap cannot be stored. */
export function persistentBitmapRefusal(version: number, size: number, name: string, granularity: number, stored: number): string | undefined {
  if (version < 3) return 'Cannot store dirty bitmaps in qcow2 v2 files';
  if (Buffer.byteLength(name) > MAX_BITMAP_NAME) return `Name length exceeds maximum (${MAX_BITMAP_NAME} characters)`;
  const bits = Math.log2(granularity);
  if (bits > MAX_GRANULARITY_BITS) return `Granularity exceeds maximum (${2 ** MAX_GRANULARITY_BITS} bytes)`;
  if (bits < MIN_GRANULARITY_BITS) return `Granularity is under minimum (${2 ** MIN_GRANULARITY_BITS} bytes)`;
  if (bitmapDataBytes(size, granularity) > MAX_BITMAP_DATA_BYTES) return 'Too much space will be occupied by the bitmap. Use larger granularity';
  if (stored >= MAX_BITMAPS) return 'Maximum number of persistent bitmaps is already reached';
  return undefined;
}

export async function loadStoredBitmaps(ctx: OpenContext, file: BlockNode, h: Qcow2Header, exts: HeaderExtension[]): Promise<StoredBitmap[]> {
  const ext = exts.find((e) => e.type === EXT.BITMAPS);
  if (!ext || !(h.autoclear & AUTOCLEAR_BITMAPS) || h.version < 3) return [];
  const cs = 2 ** h.clusterBits;
  const info = parseBitmapsExtension(ext.data);
  const dir = parseDirectory(await read(ctx, file, info.directoryOffset, info.directorySize), info.nbBitmaps, cs);
  const out: StoredBitmap[] = [];
  for (const e of dir) {
    const granularity = 2 ** e.granularityBits;
    const expected = bitmapTableEntries(h.size, granularity, cs);
    if (bitmapDataBytes(h.size, granularity) > MAX_BITMAP_DATA_BYTES) throw new Qcow2FormatError(`Bitmap '${e.name}' doesn't satisfy the constraints`);
    if (e.tableSize !== expected) throw new Qcow2FormatError(`Could not read bitmap '${e.name}' from image: Invalid argument`);
    const bits = SharedDirtyBitmap.create(h.size, granularity, false);
    const inconsistent = (e.flags & BME_FLAG.IN_USE) !== 0;
    if (!inconsistent) {
      const table = await read(ctx, file, e.tableOffset, e.tableSize * 8);
      const data = Buffer.alloc(e.tableSize * cs);
      for (let i = 0; i < e.tableSize; i++) {
        const entry = table.readBigUInt64BE(i * 8);
        const off = Number(entry & BME_TABLE_OFFSET_MASK);
        if (off === 0) {
          if (entry & BME_TABLE_ALL_ONES) data.fill(0xff, i * cs, (i + 1) * cs);
          continue;
        }
        if (off % cs !== 0) throw new Qcow2FormatError(`Bitmap '${e.name}' has an unaligned data cluster`);
        (await read(ctx, file, off, cs)).copy(data, i * cs);
      }
      bits.deserialize(data.subarray(0, bitmapDataBytes(h.size, granularity)));
    }
    out.push({ name: e.name, bits: bits.state, enabled: !inconsistent && (e.flags & BME_FLAG.AUTO) !== 0, inconsistent });
  }
  return out;
}
