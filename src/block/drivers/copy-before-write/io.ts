/**
 * copy-before-write, I/O half. A job's filter (no state) passes requests
 * to `file`.
 * A user's node (fleecing) copies, before a write, zero or discard reaches
 * `file`, the old data of every cluster it touches that is not copied yet
 * to `target`; `snapshotRead` (the snapshot-access driver) then reads the
 * point in time the node was opened at: copied clusters from `target`, the
 * others from `file`. A write waits for snapshot reads of the clusters it
 * touches that were reading `file`, so such a read never sees new data.
 * `snapshotDiscard` gives clusters of the point in time up early.
 */
import { IoError } from '../../common/io-types';
import { SharedDirtyBitmap } from '../../common/shared-dirty-bitmap';
import { DirtyBitmap } from '../../io/dirty-bitmap';
import type { IoDriver } from '../../io/driver-io';
import type { IoNode } from '../../io/io-node';
import { blockStatusNode, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from '../../io/request';
import type { CbwState, CbwUserState } from './common';

interface CbwIo {
  user: CbwUserState;
  /** Clusters whose old data is still only in `file`. */
  toCopy: DirtyBitmap;
  /** With `bitmap`: the clusters the snapshot holds (the others cannot be read); undefined for all. */
  access: DirtyBitmap | undefined;
  /** Copies in progress, by cluster. */
  copying: Map<number, Promise<void>>;
  /** Snapshot reads of `file` in progress, by cluster. */
  readers: Map<number, number>;
  readersGone: Array<() => void>;
  /** on-cbw-error=break-snapshot after a failed copy: the snapshot is gone. */
  broken: boolean;
}

type IoState = CbwIo | undefined;

function clusters(st: CbwIo, offset: number, bytes: number): [number, number] {
  const c = st.user.clusterSize;
  return [Math.floor(offset / c), Math.ceil((offset + bytes) / c)];
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  if (ms <= 0) return p;
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new IoError('ETIMEDOUT', 'copy-before-write timed out')), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** Copies clusters [first, end) from `file` to `target`; on failure they stay to copy. */
function claim(node: IoNode<IoState>, st: CbwIo, first: number, end: number): Promise<void> {
  const c = st.user.clusterSize;
  st.toCopy.clearChunks(first, end);
  const offset = first * c;
  const bytes = Math.min(end * c, node.length) - offset;
  const done = (async () => {
    try {
      const buf = Buffer.allocUnsafe(bytes);
      await readNode(node.child('file'), offset, buf);
      await writeNode(node.child('target'), offset, buf);
    } catch (err) {
      st.toCopy.set(offset, bytes);
      throw err;
    } finally {
      for (let i = first; i < end; i++) st.copying.delete(i);
    }
  })();
  for (let i = first; i < end; i++) st.copying.set(i, done);
  return done;
}

/** Before a change of [offset, offset + bytes) reaches `file`: its old data is in `target`, and no snapshot read of it is left on `file`. */
async function beforeChange(node: IoNode<IoState>, st: CbwIo, offset: number, bytes: number): Promise<void> {
  if (st.broken) return;
  const [first, end] = clusters(st, offset, Math.max(bytes, 1));
  const waits: Promise<void>[] = [];
  for (let i = first; i < Math.min(end, st.toCopy.chunks); ) {
    const pending = st.copying.get(i);
    if (pending) {
      waits.push(pending);
      i++;
    } else if (st.toCopy.get(i)) {
      const runEnd = st.toCopy.runEnd(i, end - i);
      waits.push(claim(node, st, i, runEnd));
      i = runEnd;
    } else {
      i++;
    }
  }
  try {
    await withTimeout(Promise.all(waits).then(() => undefined), st.user.timeoutMs);
  } catch (err) {
    if (st.user.onCbwError === 'break-guest-write') throw err;
    // The guest write goes on; the snapshot cannot be trusted any more.
    st.broken = true;
    return;
  }
  const busy = (): boolean => {
    for (let i = first; i < end; i++) if (st.readers.has(i)) return true;
    return false;
  };
  while (busy()) await new Promise<void>((resolve) => st.readersGone.push(resolve));
}

/** The clusters of the point in time: those of the node's `bitmap`, or all. */
function snapshotClusters(user: CbwUserState, length: number): DirtyBitmap {
  const out = new DirtyBitmap(length, user.clusterSize);
  if (!user.clusters) {
    out.setAll();
    return out;
  }
  const src = SharedDirtyBitmap.from(user.clusters);
  for (let c = src.nextDirty(0); c >= 0; ) {
    const end = src.nextClean(c);
    out.set(c * src.granularity, (end - c) * src.granularity);
    c = end < src.chunks ? src.nextDirty(end) : -1;
  }
  return out;
}

/** QEMU refuses a snapshot read or block status touching a cluster outside the bitmap. */
function checkAccess(st: CbwIo, offset: number, bytes: number): void {
  if (!st.access) return;
  const [first, end] = clusters(st, offset, Math.max(bytes, 1));
  if (st.access.runEnd(first, end - first) < end) throw new IoError('EACCES', 'the snapshot does not hold this range');
}

export const copyBeforeWriteIo: IoDriver<IoState> = {
  name: 'copy-before-write',
  attach(desc) {
    const user = desc.state as CbwState;
    if (!user) return undefined;
    const toCopy = snapshotClusters(user, desc.length);
    const access = user.clusters ? snapshotClusters(user, desc.length) : undefined;
    return { user, toCopy, access, copying: new Map(), readers: new Map(), readersGone: [], broken: false };
  },
  read: (node, offset, buf) => readNode(node.child('file'), offset, buf),
  async write(node, offset, buf, flags) {
    if (node.state) await beforeChange(node, node.state, offset, buf.length);
    return writeNode(node.child('file'), offset, buf, flags);
  },
  async writeZeroes(node, offset, bytes, flags) {
    if (node.state) await beforeChange(node, node.state, offset, bytes);
    return writeZeroesNode(node.child('file'), offset, bytes, flags);
  },
  async discard(node, offset, bytes) {
    if (node.state) await beforeChange(node, node.state, offset, bytes);
    return discardNode(node.child('file'), offset, bytes);
  },
  flush: (node) => flushNode(node.child('file')),
  blockStatus: (node, offset, bytes) => blockStatusNode(node.child('file'), offset, bytes),
};

/** Whether `node` is a copy-before-write node a user created (it keeps a snapshot). */
export function keepsSnapshot(node: IoNode): boolean {
  return node.driver === copyBeforeWriteIo && node.state !== undefined;
}

/** Fails as a snapshot read would where the point in time of `node` cannot be read. */
export function checkSnapshotAccess(node: IoNode, offset: number, bytes: number): void {
  const st = node.state as IoState;
  if (!st || node.driver !== copyBeforeWriteIo) throw new IoError('ENOTSUP', 'not a copy-before-write node');
  if (st.broken) throw new IoError('EACCES', 'the snapshot was broken by a failed copy-before-write');
  checkAccess(st, offset, bytes);
}

/**
 * Gives up the whole clusters of a range of the point in time (a fleecing
 * client has read them): they are no longer copied, their copies in
 * `target` are discarded, and reading them fails from now on.
 */
export async function snapshotDiscard(node: IoNode, offset: number, bytes: number): Promise<void> {
  const st = node.state as IoState;
  if (!st || node.driver !== copyBeforeWriteIo) throw new IoError('ENOTSUP', 'not a copy-before-write node');
  const c = st.user.clusterSize;
  const first = Math.ceil(offset / c);
  const end = offset + bytes >= node.length ? Math.ceil(node.length / c) : Math.floor((offset + bytes) / c);
  if (end <= first) return;
  if (!st.access) {
    st.access = new DirtyBitmap(node.length, c);
    st.access.setAll();
  }
  st.access.clearChunks(first, end);
  st.toCopy.clearChunks(first, end);
  await discardNode(node.child('target'), first * c, Math.min(end * c, node.length) - first * c);
}

/** Reads the point in time of a user's copy-before-write node `node`. */
export async function snapshotRead(node: IoNode, offset: number, buf: Buffer): Promise<void> {
  const st = node.state as IoState;
  if (!st || node.driver !== copyBeforeWriteIo) throw new IoError('ENOTSUP', 'not a copy-before-write node');
  if (st.broken) throw new IoError('EACCES', 'the snapshot was broken by a failed copy-before-write');
  checkAccess(st, offset, buf.length);
  const c = st.user.clusterSize;
  const end = offset + buf.length;
  const parts: Promise<void>[] = [];
  for (let at = offset; at < end; ) {
    const copied = !st.toCopy.get(Math.floor(at / c)) && !st.copying.has(Math.floor(at / c));
    let segEnd = Math.min(end, (Math.floor(at / c) + 1) * c);
    while (segEnd < end) {
      const i = Math.floor(segEnd / c);
      if ((!st.toCopy.get(i) && !st.copying.has(i)) !== copied) break;
      segEnd = Math.min(end, (i + 1) * c);
    }
    const slice = buf.subarray(at - offset, segEnd - offset);
    if (copied) {
      parts.push(readNode(node.child('target'), at, slice));
    } else {
      // Registered before the first await: a write to these clusters now waits for this read.
      const [first, last] = [Math.floor(at / c), Math.ceil(segEnd / c)];
      for (let i = first; i < last; i++) st.readers.set(i, (st.readers.get(i) ?? 0) + 1);
      parts.push(
        readNode(node.child('file'), at, slice).finally(() => {
          for (let i = first; i < last; i++) {
            const n = st.readers.get(i)! - 1;
            if (n === 0) st.readers.delete(i);
            else st.readers.set(i, n);
          }
          const woken = st.readersGone.splice(0);
          for (const w of woken) w();
        }),
      );
    }
    at = segEnd;
  }
  await Promise.all(parts);
}
