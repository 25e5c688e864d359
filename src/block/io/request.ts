/**
 * The generic request layer: every read, write, zero, discard, flush,
 * block-status and truncate on a node passes through here. The checks are
 * made once, so drivers may assume what `driver-io.ts` promises: bounds,
 * alignment (read-modify-write below the node's request alignment), maximum
 * transfer size, and writability. In-flight requests are counted per node so
 * drained sections can wait for them, and every read, write, zero, discard
 * and flush is accounted on the node it reaches (`node-stats.ts`): block
 * status and truncate are not, as QEMU has no such kind of accounting.
 */
import { IoError, STATUS, type BlockStatus, type WriteFlags, type ZeroFlags } from '../common/io-types';
import { ACCT_FLUSH, ACCT_READ, ACCT_UNMAP, ACCT_WRITE, type AcctKind } from '../common/node-stats';
import { markDirty } from './dirty-tracking';
import type { IoNode } from './io-node';
import { acctDone, acctFailed, acctInvalid, acctStart, acctWriteEnd } from './node-stats';
import { RangeLocks } from './range-locks';
import { checkWriteThreshold } from './write-threshold';
import { notifyAfter, notifyBefore, writeNotifiers, type WriteKind, type WriteNotifier } from './write-notifiers';

const rmwLocks = new WeakMap<IoNode, RangeLocks>();

function locksOf(node: IoNode): RangeLocks {
  let l = rmwLocks.get(node);
  if (!l) {
    l = new RangeLocks();
    rmwLocks.set(node, l);
  }
  return l;
}

function begin(node: IoNode): void {
  node.inFlight++;
}

function end(node: IoNode): void {
  if (--node.inFlight === 0 && node.idleWaiters.length > 0) {
    const waiters = node.idleWaiters;
    node.idleWaiters = [];
    for (const w of waiters) w();
  }
}

/** A request refused before it reaches the driver counts as invalid of its kind (none: block status, truncate). */
function checkRange(node: IoNode, offset: number, bytes: number, kind?: AcctKind): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
    if (kind !== undefined) acctInvalid(node.stats, kind);
    throw new IoError('EINVAL', `invalid request: offset ${offset}, length ${bytes}`);
  }
  if (offset + bytes > node.length) {
    if (kind !== undefined) acctInvalid(node.stats, kind);
    throw new IoError('EIO', `request beyond the end of node ${node.name}: offset ${offset}, length ${bytes}, size ${node.length}`);
  }
}

function checkWritable(node: IoNode, kind?: AcctKind): void {
  if (node.readOnly) {
    if (kind !== undefined) acctInvalid(node.stats, kind);
    throw new IoError('EPERM', `node ${node.name} is read-only`);
  }
}

/**
 * For users that check requests themselves before they reach the node (an
 * export refusing a request past its end): counts one invalid request of
 * `kind` on `node`, as a device model calls QEMU's block_acct_invalid.
 */
export function countInvalidRequest(node: IoNode, kind: AcctKind): void {
  acctInvalid(node.stats, kind);
}

function isAligned(node: IoNode, offset: number, bytes: number): boolean {
  const a = node.requestAlignment;
  return a <= 1 || (offset % a === 0 && bytes % a === 0);
}

function alignDown(n: number, a: number): number {
  return n - (n % a);
}

function alignUp(n: number, a: number): number {
  return alignDown(n + a - 1, a);
}

/** Runs `fn` on pieces of at most `max` bytes (max 0: no limit). */
async function chunked(offset: number, bytes: number, max: number, fn: (off: number, len: number, done: number) => Promise<void>): Promise<void> {
  if (max <= 0 || bytes <= max) return fn(offset, bytes, 0);
  for (let done = 0; done < bytes; done += max) {
    await fn(offset + done, Math.min(max, bytes - done), done);
  }
}

export function isZeroBuffer(buf: Uint8Array): boolean {
  // Compare 8 bytes at a time where the buffer allows; zero detection runs on every write with detect-zeroes.
  const len = buf.length;
  let i = 0;
  if (buf.byteOffset % 8 === 0) {
    const words = new BigUint64Array(buf.buffer, buf.byteOffset, len >>> 3);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0n) return false;
    i = words.length << 3;
  }
  for (; i < len; i++) if (buf[i] !== 0) return false;
  return true;
}

export async function readNode(node: IoNode, offset: number, buf: Buffer): Promise<void> {
  checkRange(node, offset, buf.length, ACCT_READ);
  if (buf.length === 0) return;
  const t0 = acctStart();
  begin(node);
  try {
    if (isAligned(node, offset, buf.length)) {
      await chunked(offset, buf.length, node.maxTransfer, (off, len, done) =>
        node.driver.read(node, off, buf.subarray(done, done + len)),
      );
    } else {
      await readUnaligned(node, offset, buf);
    }
  } catch (err) {
    acctFailed(node.stats, ACCT_READ, t0);
    throw err;
  } finally {
    end(node);
  }
  acctDone(node.stats, ACCT_READ, buf.length, t0);
}

async function readUnaligned(node: IoNode, offset: number, buf: Buffer): Promise<void> {
  const a = node.requestAlignment;
  const start = alignDown(offset, a);
  const stop = Math.min(alignUp(offset + buf.length, a), alignUp(node.length, a));
  const bounce = Buffer.alloc(stop - start);
  await chunked(start, bounce.length, node.maxTransfer, (off, len, done) =>
    node.driver.read(node, off, bounce.subarray(done, done + len)),
  );
  bounce.copy(buf, 0, offset - start, offset - start + buf.length);
}

export async function writeNode(node: IoNode, offset: number, buf: Buffer, flags: WriteFlags = {}): Promise<void> {
  checkWritable(node, ACCT_WRITE);
  checkRange(node, offset, buf.length, ACCT_WRITE);
  if (buf.length === 0) return;
  if (node.detectZeroes !== 'off' && isZeroBuffer(buf)) {
    // Accounted there, once, as the write it still is.
    return writeZeroesNode(node, offset, buf.length, { ...flags, mayUnmap: node.detectZeroes === 'unmap' && node.discardMode === 'unmap' });
  }
  const t0 = acctStart();
  try {
    const hooks = writeNotifiers(node);
    if (hooks) await withNotifiers(node, hooks, offset, buf.length, 'write', buf, () => writeData(node, offset, buf, flags));
    else await writeData(node, offset, buf, flags);
  } catch (err) {
    acctFailed(node.stats, ACCT_WRITE, t0);
    throw err;
  }
  acctDone(node.stats, ACCT_WRITE, buf.length, t0);
}

/** Runs a write-like request between the node's write notifiers, all counted in flight. */
async function withNotifiers(node: IoNode, hooks: WriteNotifier[], offset: number, bytes: number, kind: WriteKind, data: Buffer | undefined, op: () => Promise<void>): Promise<void> {
  begin(node);
  let ok = false;
  try {
    await notifyBefore(hooks, offset, bytes);
    await op();
    ok = true;
  } finally {
    try {
      await notifyAfter(hooks, offset, bytes, kind, data, ok);
    } finally {
      end(node);
    }
  }
}

async function writeData(node: IoNode, offset: number, buf: Buffer, flags: WriteFlags): Promise<void> {
  checkWriteThreshold(node, offset, buf.length);
  begin(node);
  try {
    if (isAligned(node, offset, buf.length)) {
      // Below a request alignment of 2, read-modify-write never happens and nothing needs serialising.
      const release = node.requestAlignment > 1 ? await locksOf(node).acquire(offset, buf.length) : undefined;
      try {
        await chunked(offset, buf.length, node.maxTransfer, (off, len, done) =>
          node.driver.write(node, off, buf.subarray(done, done + len), flags),
        );
      } finally {
        release?.();
      }
    } else {
      await readModifyWrite(node, offset, buf.length, flags, (bounce, at) => buf.copy(bounce, at));
    }
  } finally {
    markDirty(node, offset, buf.length);
    acctWriteEnd(node.stats, offset, buf.length);
    end(node);
  }
}

/** Writes an unaligned range by reading the aligned blocks around it; serialised against overlapping writes. */
async function readModifyWrite(node: IoNode, offset: number, bytes: number, flags: WriteFlags, fill: (bounce: Buffer, at: number) => void): Promise<void> {
  const a = node.requestAlignment;
  const start = alignDown(offset, a);
  const stop = alignUp(offset + bytes, a);
  const locks = locksOf(node);
  const release = await locks.acquire(start, stop - start);
  try {
    const bounce = Buffer.alloc(stop - start);
    await chunked(start, bounce.length, node.maxTransfer, (off, len, done) =>
      node.driver.read(node, off, bounce.subarray(done, done + len)),
    );
    fill(bounce, offset - start);
    await chunked(start, bounce.length, node.maxTransfer, (off, len, done) =>
      node.driver.write(node, off, bounce.subarray(done, done + len), flags),
    );
  } finally {
    release();
  }
}

/** Accounted as a write, as QEMU's device models account write-zeroes. */
export async function writeZeroesNode(node: IoNode, offset: number, bytes: number, flags: ZeroFlags = {}): Promise<void> {
  checkWritable(node, ACCT_WRITE);
  checkRange(node, offset, bytes, ACCT_WRITE);
  if (bytes === 0) return;
  const t0 = acctStart();
  try {
    const hooks = writeNotifiers(node);
    if (hooks) await withNotifiers(node, hooks, offset, bytes, 'zero', undefined, () => writeZeroesData(node, offset, bytes, flags));
    else await writeZeroesData(node, offset, bytes, flags);
  } catch (err) {
    acctFailed(node.stats, ACCT_WRITE, t0);
    throw err;
  }
  acctDone(node.stats, ACCT_WRITE, bytes, t0);
}

async function writeZeroesData(node: IoNode, offset: number, bytes: number, flags: ZeroFlags): Promise<void> {
  const zeroFlags: ZeroFlags = { ...flags, mayUnmap: !!flags.mayUnmap && node.discardMode === 'unmap' };
  checkWriteThreshold(node, offset, bytes);
  begin(node);
  try {
    if (!isAligned(node, offset, bytes)) {
      if (flags.noFallback) throw new IoError('ENOTSUP', 'unaligned fast zeroing is not supported');
      await readModifyWrite(node, offset, bytes, flags, (bounce, at) => bounce.fill(0, at, at + bytes));
      return;
    }
    if (node.requestAlignment > 1) await locksOf(node).waitFor(offset, bytes);
    const driver = node.driver;
    if (driver.writeZeroes) {
      try {
        await driver.writeZeroes(node, offset, bytes, zeroFlags);
        return;
      } catch (err) {
        if ((err as IoError).code !== 'ENOTSUP' || flags.noFallback) throw err;
      }
    } else if (flags.noFallback) {
      throw new IoError('ENOTSUP', `node ${node.name} cannot zero quickly`);
    }
    await writeZeroBuffers(node, offset, bytes, flags);
  } finally {
    markDirty(node, offset, bytes);
    acctWriteEnd(node.stats, offset, bytes);
    end(node);
  }
}

const ZERO_CHUNK = 1 << 20;
let zeroBuffer: Buffer | undefined;

async function writeZeroBuffers(node: IoNode, offset: number, bytes: number, flags: WriteFlags): Promise<void> {
  zeroBuffer ??= Buffer.alloc(ZERO_CHUNK);
  const max = node.maxTransfer > 0 ? Math.min(node.maxTransfer, ZERO_CHUNK) : ZERO_CHUNK;
  await chunked(offset, bytes, max, (off, len) => node.driver.write(node, off, zeroBuffer!.subarray(0, len), flags));
}

/** Accounted with the bytes asked for, also when the node ignores discards: the request was answered. */
export async function discardNode(node: IoNode, offset: number, bytes: number): Promise<void> {
  checkWritable(node, ACCT_UNMAP);
  checkRange(node, offset, bytes, ACCT_UNMAP);
  if (bytes === 0) return;
  const t0 = acctStart();
  try {
    await discardRange(node, offset, bytes);
  } catch (err) {
    acctFailed(node.stats, ACCT_UNMAP, t0);
    throw err;
  }
  acctDone(node.stats, ACCT_UNMAP, bytes, t0);
}

async function discardRange(node: IoNode, offset: number, bytes: number): Promise<void> {
  if (node.discardMode !== 'unmap' || !node.driver.discard) return;
  // Discard is a hint: shrink to the aligned part rather than read-modify-write.
  // Dirty tracking covers the whole request, as in QEMU, even the parts too small to pass down.
  const a = node.requestAlignment;
  const start = alignUp(offset, a);
  const stop = alignDown(offset + bytes, a);
  if (stop <= start) return markDirty(node, offset, bytes);
  const discard = node.driver.discard.bind(node.driver);
  const op = async (): Promise<void> => {
    checkWriteThreshold(node, start, stop - start);
    begin(node);
    try {
      await discard(node, start, stop - start);
    } finally {
      markDirty(node, offset, bytes);
      end(node);
    }
  };
  const hooks = writeNotifiers(node);
  return hooks ? withNotifiers(node, hooks, start, stop - start, 'discard', undefined, op) : op();
}

export async function flushNode(node: IoNode): Promise<void> {
  const t0 = acctStart();
  begin(node);
  try {
    if (node.driver.flush) {
      await node.driver.flush(node);
    } else {
      for (const child of node.children.values()) await flushNode(child);
    }
  } catch (err) {
    acctFailed(node.stats, ACCT_FLUSH, t0);
    throw err;
  } finally {
    end(node);
  }
  acctDone(node.stats, ACCT_FLUSH, 0, t0);
}

export async function blockStatusNode(node: IoNode, offset: number, bytes: number): Promise<BlockStatus> {
  checkRange(node, offset, bytes);
  if (bytes === 0) throw new IoError('EINVAL', 'block status of an empty range');
  begin(node);
  try {
    if (!node.driver.blockStatus) {
      return { status: STATUS.DATA | STATUS.ALLOCATED, bytes, depth: 1 };
    }
    const st = await node.driver.blockStatus(node, offset, bytes);
    if (st.bytes <= 0 || st.bytes > bytes) throw new IoError('EIO', `driver ${node.driver.name} returned a bad block status length`);
    return st;
  } finally {
    end(node);
  }
}

export async function truncateNode(node: IoNode, length: number, exact: boolean, preallocation: string): Promise<number> {
  checkWritable(node);
  if (!Number.isSafeInteger(length) || length < 0) throw new IoError('EINVAL', `invalid length ${length}`);
  if (!node.driver.truncate) throw new IoError('ENOTSUP', 'Image format driver does not support resize');
  begin(node);
  try {
    node.length = await node.driver.truncate(node, length, exact, preallocation);
    return node.length;
  } finally {
    end(node);
  }
}
