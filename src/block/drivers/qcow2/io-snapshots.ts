/**
 * qcow2, I/O half: taking and deleting internal snapshots. The node is
 * drained by the caller, so no guest request runs meanwhile.
 *
 * A snapshot is a copy of the active L1 table plus one more reference on
 * every cluster the active tables reach. The order keeps a crash harmless
 * (leaks at worst, never a cluster shared without its refcount saying so):
 *
 *  take:   1. the COPIED flags of the active tables are cleared, so later
 *             writes copy (harmless even before the refcounts rise);
 *          2. the refcounts rise and the L1 copy is written;
 *          3. the new snapshot table is written, all synced;
 *          4. the header switches to it in one write; the old table is freed.
 *  delete: 1. the new table (without the entry) is written and the header
 *             switches to it;
 *          2. the refcounts the snapshot held drop (after 1 is on disk);
 *          3. COPIED flags return where a refcount fell back to one.
 *
 * A snapshot that fails before its header switch is undone (refcounts and
 * flags as they were), so a full disk leaves no leaked clusters behind.
 */
import { IoError } from '../../common/io-types';
import { type InternalSnapshotOp, type InternalSnapshotResult, snapshotMatches } from '../../common/internal-snapshot';
import { HI_COMPRESSED, HI_OFFSET_MASK, LO_OFFSET_MASK, OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED } from './common';
import type { Qcow2Image } from './io-image';
import { encodeSnapshotTable, MAX_SNAPSHOTS, NO_ICOUNT, nextSnapshotId, type SnapshotEntry, snapshotInfo } from './snapshot-table';

/** Host clusters an L2 entry holds a reference on (none for unallocated and plain zero clusters). */
function referencedClusters(img: Qcow2Image, entry: bigint): number[] {
  if (entry & OFLAG_COMPRESSED) {
    const { start, bytes } = img.compressedRange(entry);
    const out: number[] = [];
    for (let c = Math.floor(start / img.cs); c <= Math.floor((start + bytes - 1) / img.cs); c++) out.push(c);
    return out;
  }
  const off = Number(entry & OFFSET_MASK);
  return off ? [off / img.cs] : [];
}

async function readL1Copy(img: Qcow2Image, sn: SnapshotEntry): Promise<bigint[]> {
  const buf = Buffer.alloc(sn.l1Size * 8);
  await img.readFile(sn.l1Offset, buf);
  const out: bigint[] = [];
  for (let i = 0; i < sn.l1Size; i++) out.push(buf.readBigUInt64BE(i * 8));
  return out;
}

/** Whether an L2 entry is a cluster of its own that may carry COPIED (normal, or zero with a preallocated cluster). */
function mayBeCopied(entry: bigint): boolean {
  return (entry & OFLAG_COMPRESSED) === 0n && (entry & OFFSET_MASK) !== 0n;
}

/** Rewrites the entries of L2 table `l2Off` through `change`, as one update when any differs. */
async function updateL2Flags(img: Qcow2Image, l2Off: number, change: (entry: bigint) => bigint): Promise<void> {
  const table = await img.l2Table(l2Off);
  const values: bigint[] = [];
  let changed = false;
  for (let k = 0; k < img.g.l2Entries; k++) {
    const e = table.buf.readBigUInt64BE(k * 8);
    const v = change(e);
    if (v !== e) changed = true;
    values.push(v);
  }
  if (changed) await img.setL2Entries(l2Off, 0, values);
}

/** The entries of L2 table `l2Off`. */
async function l2Entries(img: Qcow2Image, l2Off: number): Promise<bigint[]> {
  const table = await img.l2Table(l2Off);
  const out: bigint[] = [];
  for (let k = 0; k < img.g.l2Entries; k++) out.push(table.buf.readBigUInt64BE(k * 8));
  return out;
}

/** Clears COPIED in the active L2 tables and the active L1 table: every cluster they reach becomes shared. */
async function clearCopiedFlags(img: Qcow2Image): Promise<void> {
  for (let i = 0; i < img.l1.length; i++) {
    const l1e = img.l1Entry(i);
    const l2Off = Number(l1e & OFFSET_MASK);
    if (!l2Off) continue;
    // A table whose L1 entry lacks COPIED is shared already: its entries lack it too.
    if (l1e & OFLAG_COPIED) {
      await updateL2Flags(img, l2Off, (e) => e & ~OFLAG_COPIED);
      await img.writeL1Entry(i, l1e & ~OFLAG_COPIED);
    }
  }
  await img.flushAll();
}

/** Every cluster the L1 table `l1` reaches, once per reference: its L2 tables and what they reference. */
async function reachedClusters(img: Qcow2Image, l1: readonly bigint[]): Promise<number[]> {
  const out: number[] = [];
  for (const l1e of l1) {
    const l2Off = Number(l1e & OFFSET_MASK);
    if (!l2Off) continue;
    out.push(l2Off / img.cs);
    const buf = (await img.l2Table(l2Off)).buf;
    // Entries read as two 32-bit halves: BigInt work on every entry of a large image costs more than the rest.
    for (let at = 0; at < buf.length; at += 8) {
      const hi = buf.readUInt32BE(at);
      if (hi & HI_COMPRESSED) {
        for (const c of referencedClusters(img, buf.readBigUInt64BE(at))) out.push(c);
        continue;
      }
      const host = (hi & HI_OFFSET_MASK) * 0x100000000 + ((buf.readUInt32BE(at + 4) & LO_OFFSET_MASK) >>> 0);
      if (host) out.push(host / img.cs);
    }
  }
  return out;
}

/** Raises the refcount of every cluster the active tables reach (returned); none rises if one cannot. */
async function raiseActiveRefcounts(img: Qcow2Image): Promise<number[]> {
  const reached = await reachedClusters(img, img.l1);
  await img.adjustRefcounts(reached, 1);
  return reached;
}

/**
 * Undoes a snapshot that failed before the header switched to it: nothing
 * on disk references the raised refcounts nor the L1 copy, so they drop at
 * once, and the COPIED flags come back. A failure here leaves leaks or
 * flags cleared for nothing, both harmless to the data.
 */
async function undoSnapshot(img: Qcow2Image, raised: number[], l1Copy: { offset: number; clusters: number } | undefined): Promise<void> {
  try {
    await img.adjustRefcounts(raised, -1);
    if (l1Copy) {
      img.unmarkInactiveL1(l1Copy.offset, l1Copy.clusters * img.cs);
      for (let k = 0; k < l1Copy.clusters; k++) await img.adjustRefcount(l1Copy.offset / img.cs + k, -1);
    }
    await restoreCopiedFlags(img);
  } catch {
    // The error that made the snapshot fail is the one to report.
  }
}

async function takeSnapshot(img: Qcow2Image, op: Extract<InternalSnapshotOp, { kind: 'create' }>): Promise<InternalSnapshotResult> {
  if (img.snapshots.length >= MAX_SNAPSHOTS) throw new IoError('EFBIG', 'Too many snapshots');
  // One-bit refcounts cannot count a second reference.
  if (img.g.refcountOrder === 0) throw new IoError('ERANGE', 'Refcounts of one bit cannot share clusters');
  const entry: SnapshotEntry = {
    l1Offset: 0,
    l1Size: img.l1.length,
    id: nextSnapshotId(img.snapshots),
    name: op.name,
    dateSec: op.dateSec,
    dateNsec: op.dateNsec,
    vmClockNsec: BigInt(op.vmClockNsec),
    vmStateSize: 0,
    diskSize: img.size,
    icount: NO_ICOUNT,
    unknownExtra: Buffer.alloc(0),
  };
  // The copy holds the L1 entries as they are before the flags change, as QEMU's does.
  const l1Copy = Buffer.alloc(img.l1.length * 8);
  img.l1.forEach((v, i) => l1Copy.writeBigUInt64BE(v, i * 8));
  await img.flushAll();
  await clearCopiedFlags(img);
  let raised: number[] = [];
  let copy: { offset: number; clusters: number } | undefined;
  const entries = [...img.snapshots, entry];
  try {
    raised = await raiseActiveRefcounts(img);
    if (l1Copy.length > 0) {
      copy = { offset: await img.allocClusters(Math.ceil(l1Copy.length / img.cs)), clusters: Math.ceil(l1Copy.length / img.cs) };
      entry.l1Offset = copy.offset;
      await img.writeNewMetadata(entry.l1Offset, l1Copy, 'inactive L1 table');
    }
    await img.replaceSnapshotTable(entries, encodeSnapshotTable(entries));
  } catch (err) {
    if (!img.snapshots.includes(entry)) await undoSnapshot(img, raised, copy);
    throw err;
  }
  await img.flushAll();
  return { snapshots: entries.map(snapshotInfo), affected: snapshotInfo(entry) };
}

/** Sets COPIED again on active entries whose cluster is no longer shared. */
async function restoreCopiedFlags(img: Qcow2Image): Promise<void> {
  for (let i = 0; i < img.l1.length; i++) {
    const l1e = img.l1Entry(i);
    const l2Off = Number(l1e & OFFSET_MASK);
    if (!l2Off || (await img.refcount(l2Off / img.cs)) !== 1) continue;
    const candidates = (await l2Entries(img, l2Off)).filter((e) => mayBeCopied(e) && !(e & OFLAG_COPIED));
    const refcounts = await img.refcountsOf(candidates.map((e) => Number(e & OFFSET_MASK) / img.cs));
    await updateL2Flags(img, l2Off, (e) => {
      if (!mayBeCopied(e) || e & OFLAG_COPIED) return e;
      return refcounts.get(Number(e & OFFSET_MASK) / img.cs) === 1 ? e | OFLAG_COPIED : e;
    });
    if (!(l1e & OFLAG_COPIED)) await img.writeL1Entry(i, l1e | OFLAG_COPIED);
  }
  await img.flushAll();
}

async function deleteSnapshot(img: Qcow2Image, op: Extract<InternalSnapshotOp, { kind: 'delete' }>): Promise<InternalSnapshotResult> {
  const index = img.snapshots.findIndex((s) => snapshotMatches(s, op.id, op.name));
  if (index < 0) throw new IoError('ENOENT', "Can't find the snapshot");
  const sn = img.snapshots[index]!;
  const l1 = await readL1Copy(img, sn);
  await img.flushAll();
  const entries = img.snapshots.filter((_, i) => i !== index);
  await img.replaceSnapshotTable(entries, encodeSnapshotTable(entries));
  // The header on disk no longer reaches the snapshot (the switch is synced): its references go now.
  const released = await reachedClusters(img, l1);
  if (sn.l1Size > 0) {
    img.unmarkInactiveL1(sn.l1Offset, sn.l1Size * 8);
    for (let c = Math.floor(sn.l1Offset / img.cs); c <= Math.floor((sn.l1Offset + sn.l1Size * 8 - 1) / img.cs); c++) released.push(c);
  }
  await img.flushAll();
  await img.adjustRefcounts(released, -1);
  await img.flushAll();
  const freedTables = l1.map((e) => Number(e & OFFSET_MASK)).filter((off) => off !== 0);
  for (const off of freedTables) if ((await img.refcount(off / img.cs)) === 0) img.forgetL2Table(off);
  await restoreCopiedFlags(img);
  return { snapshots: entries.map(snapshotInfo), affected: snapshotInfo(sn) };
}

/** Runs one internal snapshot operation on the image. */
export async function internalSnapshot(img: Qcow2Image, op: InternalSnapshotOp): Promise<InternalSnapshotResult> {
  // Refcounts written lazily are brought up to date first: the operation relies on them.
  await img.markClean();
  const result = op.kind === 'create' ? await takeSnapshot(img, op) : await deleteSnapshot(img, op);
  result.driverData = { snapshotsOffset: img.snapshotsOffset };
  return result;
}
