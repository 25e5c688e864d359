/**
 * qcow2, I/O half: guest reads and writes mapped through L1/L2 onto the
 * `file` child, with fall-through to the `backing` child. The image state
 * (tables, caches, ordering rules) lives in `io-image.ts`; this file turns
 * requests into cluster runs. Requests that change mappings (write, zero,
 * discard) hold the cluster-aligned guest range, so two requests never
 * allocate the same cluster at once.
 */
import { storeBitmaps } from './io-bitmaps';
import type { Channel } from '../../../common/channel';
import { IoError, STATUS, type BlockStatus, type WriteFlags, type ZeroFlags } from '../../common/io-types';
import { ioEvent } from '../../common/io-context-protocol';
import { contextServices } from '../../io/context-services';
import type { IoDriver } from '../../io/driver-io';
import type { IoNode } from '../../io/io-node';
import { blockStatusNode, flushNode } from '../../io/request';
import { OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO, type Qcow2State } from './common';
import { FREE_BATCH, Qcow2Image } from './io-image';
import { writeCompressedLocked } from './io-compress';
import { internalSnapshot } from './io-snapshots';

interface Qcow2IoState {
  st: Qcow2State;
  image?: Qcow2Image;
  loading?: Promise<Qcow2Image>;
}

type Node = IoNode<Qcow2IoState>;

let channel: Channel | undefined;
contextServices.push((rt) => {
  channel = rt.channel;
});

function sendEvent(kind: string, node: string, data: unknown): void {
  channel?.notify(ioEvent, { kind, node, data });
}

async function ready(node: Node): Promise<Qcow2Image> {
  const s = node.state;
  if (s.image) {
    s.image.checkUsable();
    return s.image;
  }
  s.loading ??= (async () => {
    const img = new Qcow2Image(node as IoNode<unknown>, s.st, sendEvent);
    await img.load();
    // A dirty image (lazy refcounts, not closed cleanly) gets its refcounts rebuilt before any use, as the reference does.
    if (s.st.dirty && !node.readOnly) await img.prepareWrite();
    s.image = img;
    return img;
  })();
  try {
    return await s.loading;
  } catch (err) {
    s.loading = undefined;
    throw err;
  }
}

/** Errors of an image that corruption took out of service were reported by the event; they end there. */
function ignoreIfOutOfService(img: Qcow2Image): (err: unknown) => void {
  return (err) => {
    if (!img.fatal) throw err;
  };
}

function alignDown(n: number, a: number): number {
  return n - (n % a);
}

function alignUp(n: number, a: number): number {
  return alignDown(n + a - 1, a);
}

/** Takes the cluster-aligned guest range of [offset, offset + bytes). */
function lockClusters(img: Qcow2Image, offset: number, bytes: number): Promise<() => void> {
  const start = alignDown(offset, img.cs);
  return img.guestLocks.acquire(start, alignUp(offset + bytes, img.cs) - start);
}

/** Fills `into` (one cluster) with the current content of a guest cluster, for copy-on-write. */
async function oldCluster(img: Qcow2Image, entry: bigint, guest: number, into: Buffer): Promise<void> {
  switch (img.classify(entry)) {
    case 'normal':
      return img.readFile(Number(entry & OFFSET_MASK), into);
    case 'zero':
      into.fill(0);
      return;
    case 'unallocated':
      return img.readBacking(guest, into);
    case 'compressed':
      (await img.decompress(entry)).copy(into);
  }
}

/**
 * Writes the start of `data` (guest `pos`, clusters with entries `olds`)
 * into newly allocated clusters: the clusters' old content fills the partial
 * head and tail, the data goes to disk, and only then do the L2 entries point
 * at it. Returns the bytes written (the run allocated may be shorter).
 */
async function allocateAndWrite(img: Qcow2Image, l2Off: number, firstIdx: number, olds: bigint[], pos: number, data: Buffer): Promise<number> {
  const cs = img.cs;
  const run = await img.allocRun(olds.length);
  const k = run.count;
  const clusterStart = alignDown(pos, cs);
  const head = pos - clusterStart;
  const bytes = Math.min(data.length, k * cs - head);
  const tail = k * cs - head - bytes;
  let out = data.subarray(0, bytes);
  let at = run.offset;
  // A fresh run (never written) already reads as zeros: zero head and tail need no write.
  const zeroOld = (e: bigint | undefined): boolean => e !== undefined && img.classify(e) !== 'normal' && img.classify(e) !== 'compressed' && (img.classify(e) === 'zero' || !img.node.backing);
  const headZero = head === 0 || (run.fresh && zeroOld(olds[0]));
  const tailZero = tail === 0 || (run.fresh && zeroOld(olds[k - 1]));
  if (headZero && tailZero) {
    at = run.offset + head;
  } else if (head > 0 || tail > 0) {
    out = Buffer.allocUnsafe(k * cs);
    if (head > 0) await oldCluster(img, olds[0]!, clusterStart, out.subarray(0, cs));
    if (tail > 0 && (k > 1 || head === 0)) await oldCluster(img, olds[k - 1]!, clusterStart + (k - 1) * cs, out.subarray((k - 1) * cs));
    data.copy(out, head, 0, bytes);
  }
  await img.checkOverlap(run.offset, k * cs);
  await img.writeFile(at, out);
  const values: bigint[] = [];
  for (let i = 0; i < k; i++) values.push(BigInt(run.offset + i * cs) | OFLAG_COPIED);
  const prev = await img.linkClusters(l2Off, firstIdx, values);
  for (const old of prev) img.queueFree(old);
  return bytes;
}

/** The write path, with the guest range already held. */
async function writeLocked(img: Qcow2Image, offset: number, buf: Buffer): Promise<void> {
  const cs = img.cs;
  let done = 0;
  while (done < buf.length) {
    const pos = offset + done;
    const l1i = Math.floor(pos / img.l2Span);
    const inTable = Math.min(buf.length - done, (l1i + 1) * img.l2Span - pos);
    const l2Off = await img.l2ForWrite(l1i);
    const table = await img.l2Table(l2Off);
    const firstIdx = Math.floor(pos / cs) % img.g.l2Entries;
    const n = Math.ceil((pos + inTable) / cs) - Math.floor(pos / cs);
    const entries: bigint[] = [];
    for (let k = 0; k < n; k++) entries.push(table.buf.readBigUInt64BE((firstIdx + k) * 8));
    let k = 1;
    const inPlace = img.inPlace(entries[0]!);
    const host0 = Number(entries[0]! & OFFSET_MASK);
    if (inPlace) {
      if (host0 % cs !== 0 || host0 >= img.file.length) {
        throw await img.corruption(`Data cluster offset 0x${host0.toString(16)} unaligned or past the end of the file`, host0, cs);
      }
      while (k < n && img.inPlace(entries[k]!) && Number(entries[k]! & OFFSET_MASK) === host0 + k * cs) k++;
    } else {
      while (k < n && !img.inPlace(entries[k]!)) k++;
    }
    const bytes = Math.min(inTable, (Math.floor(pos / cs) + k) * cs - pos);
    const data = buf.subarray(done, done + bytes);
    if (inPlace) {
      const host = host0 + (pos % cs);
      await img.checkOverlap(host, bytes);
      await img.writeFile(host, data);
      done += bytes;
    } else {
      done += await allocateAndWrite(img, l2Off, firstIdx, entries.slice(0, k), pos, data);
    }
  }
}

/**
 * Unmaps the clusters of [start, end) for a shrink: their entries become 0
 * and what they referenced is freed. A table that goes away whole and that
 * an internal snapshot shares keeps its entries: only its own reference drops.
 */
async function cropClusters(img: Qcow2Image, start: number, end: number): Promise<void> {
  const cs = img.cs;
  for (let pos = start; pos < end; ) {
    const l1i = Math.floor(pos / img.l2Span);
    const stop = Math.min(end, (l1i + 1) * img.l2Span);
    const entry = img.l1Entry(l1i);
    const wholeTable = pos === l1i * img.l2Span;
    if (entry & OFFSET_MASK && !(wholeTable && !(entry & OFLAG_COPIED))) {
      const l2Off = await img.l2ForWrite(l1i);
      const first = Math.floor(pos / cs) % img.g.l2Entries;
      const prev = await img.setL2Entries(l2Off, first, new Array<bigint>(Math.ceil((stop - pos) / cs)).fill(0n));
      for (const old of prev) img.queueFree(old);
      if (img.freesPending >= FREE_BATCH) await img.applyFrees();
    }
    pos = stop;
  }
}

async function afterChange(img: Qcow2Image, flags: WriteFlags): Promise<void> {
  if (flags.fua) await img.flushAll();
  else if (img.freesPending >= FREE_BATCH) await img.applyFrees();
}

/**
 * Makes whole clusters of [start, start + bytes) read as zeros (v3 zero
 * flag) or, for `discard` on v2, unallocated; their host clusters are freed.
 */
async function clearClusters(node: Node, img: Qcow2Image, start: number, bytes: number, discard: boolean, unmap: boolean): Promise<void> {
  const cs = img.cs;
  const hasBacking = node.backing !== undefined;
  const newEntry = img.st.version >= 3 ? OFLAG_ZERO : 0n;
  let done = 0;
  while (done < bytes) {
    const pos = start + done;
    const l1i = Math.floor(pos / img.l2Span);
    const inTable = Math.min(bytes - done, (l1i + 1) * img.l2Span - pos);
    done += inTable;
    const existing = await img.l2For(l1i);
    if (!existing && (discard || !hasBacking)) continue;
    const l2Off = await img.l2ForWrite(l1i);
    const table = await img.l2Table(l2Off);
    const firstIdx = Math.floor(pos / cs) % img.g.l2Entries;
    const n = Math.ceil(inTable / cs);
    const values: bigint[] = [];
    let changed = false;
    for (let k = 0; k < n; k++) {
      const old = table.buf.readBigUInt64BE((firstIdx + k) * 8);
      const keep = old === newEntry || (old === 0n && !hasBacking);
      values.push(keep ? old : newEntry);
      if (!keep) changed = true;
    }
    if (!changed) continue;
    const prev = await img.setL2Entries(l2Off, firstIdx, values);
    prev.forEach((old, k) => {
      if (old !== values[k]) img.queueFree(old, unmap);
    });
    // A huge discard must not queue millions of frees: apply them table by table.
    if (img.freesPending >= FREE_BATCH) await img.applyFrees();
  }
}

function statusOf(img: Qcow2Image, kind: string, host: number, bytes: number): BlockStatus {
  switch (kind) {
    case 'normal':
      return { status: STATUS.DATA | STATUS.ALLOCATED | STATUS.OFFSET_VALID, bytes, map: host, file: img.file.name, depth: 1 };
    case 'zero':
      return { status: STATUS.ZERO | STATUS.ALLOCATED, bytes, depth: 1 };
    case 'compressed':
      return { status: STATUS.DATA | STATUS.ALLOCATED, bytes, depth: 1 };
    default:
      return { status: STATUS.ZERO, bytes, depth: 0 };
  }
}

export const qcow2Io: IoDriver<Qcow2IoState> = {
  name: 'qcow2',
  attach: (desc) => ({ st: desc.state as Qcow2State }),

  async detach(node) {
    // Persistent bitmaps are written at close, with in_use cleared.
    if (!node.readOnly && !node.state.image?.fatal && (node.state.image || node.dirtyBitmaps.some((b) => b.state.persistent))) {
      const img = await ready(node);
      await storeBitmaps(img, node.dirtyBitmaps, true).catch(ignoreIfOutOfService(img));
    }
    const img = node.state.image;
    if (img && !node.readOnly && !img.fatal) {
      // A clean close leaves a clean image: metadata written back, then the dirty bit cleared.
      if (img.hasDirtyMetadata) await img.flushAll().catch(ignoreIfOutOfService(img));
      await img.markClean().catch(ignoreIfOutOfService(img));
      await img.trimGrowth().catch(ignoreIfOutOfService(img));
    }
  },

  async beforeReadOnly(node) {
    // As QEMU's reopen to read-only: metadata written back, then the dirty bit cleared.
    const img = node.state.image;
    if (img && !img.fatal) await img.markClean().catch(ignoreIfOutOfService(img));
  },

  async internalSnapshot(node, op) {
    const img = await ready(node);
    await img.prepareWrite();
    return internalSnapshot(img, op);
  },

  async storeBitmaps(node) {
    const img = await ready(node);
    await storeBitmaps(img, node.dirtyBitmaps, false);
  },

  async read(node, offset, buf) {
    const img = await ready(node);
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const l1i = Math.floor(pos / img.l2Span);
      const inTable = Math.min(buf.length - done, (l1i + 1) * img.l2Span - pos);
      const extents = await img.mapRange(pos, inTable);
      for (const x of extents) {
        const at = x.guest - offset;
        await img.readExtent(x, buf.subarray(at, at + x.bytes));
      }
      done += inTable;
    }
  },

  async write(node, offset, buf, flags) {
    const img = await ready(node);
    await img.prepareWrite();
    const release = await lockClusters(img, offset, buf.length);
    try {
      if (flags.compressed) await writeCompressedLocked(img, node.length, offset, buf, (pos, data) => writeLocked(img, pos, data));
      else await writeLocked(img, offset, buf);
    } finally {
      release();
    }
    await afterChange(img, flags);
  },

  async writeZeroes(node, offset, bytes, flags: ZeroFlags) {
    const img = await ready(node);
    if (img.st.version < 3 && node.backing) throw new IoError('ENOTSUP', 'qcow2 v2 images cannot mark clusters as zero');
    await img.prepareWrite();
    const cs = img.cs;
    const end = offset + bytes;
    const a = Math.min(alignUp(offset, cs), end);
    const b = Math.max(end === node.length ? alignUp(end, cs) : alignDown(end, cs), a);
    if ((a > offset || Math.min(b, end) < end) && flags.noFallback) throw new IoError('ENOTSUP', 'zeroing part of a cluster needs a write');
    const release = await lockClusters(img, offset, bytes);
    try {
      if (a > offset) await writeLocked(img, offset, Buffer.alloc(a - offset));
      if (b > a) await clearClusters(node, img, a, b - a, false, !!flags.mayUnmap);
      const tailStart = Math.max(a, Math.min(b, end));
      if (tailStart < end) await writeLocked(img, tailStart, Buffer.alloc(end - tailStart));
    } finally {
      release();
    }
    await afterChange(img, flags);
  },

  async discard(node, offset, bytes) {
    const img = await ready(node);
    await img.prepareWrite();
    const cs = img.cs;
    const end = offset + bytes;
    const a = alignUp(offset, cs);
    const b = end === node.length ? alignUp(end, cs) : alignDown(end, cs);
    if (b <= a) return;
    const release = await lockClusters(img, a, b - a);
    try {
      await clearClusters(node, img, a, b - a, true, true);
    } finally {
      release();
    }
    await afterChange(img, {});
  },

  async flush(node) {
    const img = node.state.image;
    // An image taken out of service has nothing left to flush, as in the reference.
    if (img?.fatal) return;
    if (img && !node.readOnly) await img.flushAll().catch(ignoreIfOutOfService(img));
    else await flushNode(node.child('file'));
  },

  async blockStatus(node, offset, bytes) {
    const img = await ready(node);
    const l1i = Math.floor(offset / img.l2Span);
    const inTable = Math.min(bytes, (l1i + 1) * img.l2Span - offset);
    const first = (await img.mapRange(offset, inTable, true))[0]!;
    if (first.kind === 'unallocated') {
      const backing = node.backing;
      const avail = backing ? Math.min(first.bytes, backing.length - offset) : 0;
      if (!backing || avail <= 0) return { status: STATUS.ZERO, bytes: first.bytes, depth: 0 };
      const st = await blockStatusNode(backing, offset, avail);
      const out: BlockStatus = { status: st.status & ~STATUS.ALLOCATED, bytes: st.bytes, depth: st.depth ? st.depth + 1 : 0 };
      if (st.status & STATUS.OFFSET_VALID) {
        out.map = st.map;
        out.file = st.file;
      }
      return out;
    }
    return statusOf(img, first.kind, first.host, first.bytes);
  },

  async truncate(node, length, _exact, preallocation) {
    const img = await ready(node);
    if (preallocation !== 'off') throw new IoError('ENOTSUP', `Unsupported preallocation mode '${preallocation}'`);
    if (length % 512 !== 0) throw new IoError('EINVAL', 'The new size must be a multiple of 512');
    await img.prepareWrite();
    await img.flushAll();
    if (length < node.length) {
      const start = alignUp(length, img.cs);
      const end = alignUp(node.length, img.cs);
      if (end > start) {
        const release = await lockClusters(img, start, end - start);
        try {
          await cropClusters(img, start, end);
        } finally {
          release();
        }
      }
      await img.shrink(length);
    } else {
      await img.grow(length);
    }
    return length;
  },
};
