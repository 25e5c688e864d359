/**
 * qcow2, I/O half: rebuilding refcounts of an image left dirty (written with
 * lazy refcounts and not closed cleanly). Every cluster the active tables
 * reference is counted, and each refcount is set to that count; clusters no
 * one references become free. Images whose references reach clusters without
 * a refcount block, or that have internal snapshots, are not repaired here.
 */
import { IoError } from '../../common/io-types';
import { OFFSET_MASK, OFLAG_COMPRESSED } from './common';
import type { Qcow2Image } from './io-image';

export async function repairRefcounts(img: Qcow2Image): Promise<void> {
  if (img.st.nbSnapshots > 0) throw new IoError('ENOTSUP', 'Repairing the refcounts of a dirty image with internal snapshots is not supported; use qemu-img check -r all');
  const cs = img.cs;
  const refs = new Map<number, number>();
  const count = (offset: number, bytes: number): void => {
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + Math.max(bytes, 1) - 1) / cs);
    for (let c = first; c <= last; c++) refs.set(c, (refs.get(c) ?? 0) + 1);
  };
  count(0, cs);
  count(img.l1Offset, img.l1.length * 8);
  count(img.reftableOffset, img.reftableClusters * cs);
  for (const off of img.reftable) if (off) count(off, cs);
  for (let i = 0; i < img.l1.length; i++) {
    const l2Off = await img.l2For(i);
    if (!l2Off) continue;
    count(l2Off, cs);
    const table = Buffer.from((await img.l2Table(l2Off)).buf);
    for (let k = 0; k < img.g.l2Entries; k++) {
      const entry = table.readBigUInt64BE(k * 8);
      if (entry & OFLAG_COMPRESSED) {
        const { start, bytes } = img.compressedRange(entry);
        count(start, bytes);
      } else {
        const off = Number(entry & OFFSET_MASK);
        if (off) count(off, cs);
      }
    }
  }
  for (const c of refs.keys()) {
    if (!img.hasRefcountBlock(c)) throw new IoError('EIO', `Cluster ${c} is in use but has no refcount block; repair the image with qemu-img check -r all`);
  }
  const stale: Array<[number, number]> = [];
  for await (const [c, rc] of img.refcounts()) {
    const want = refs.get(c) ?? 0;
    if (rc !== want) stale.push([c, want]);
  }
  for (const [c, want] of stale) await img.setRefcountTo(c, want);
  await img.markRepaired();
}
