/**
 * file / host_device, I/O half: positional reads and writes on the file
 * descriptor the GS half opened (fds are shared by all threads of the
 * process). Sparse files are first class: block status from
 * SEEK_DATA/SEEK_HOLE, zeroing and discard by hole punching, through the
 * native addon; without it everything is data and zeros are written.
 *
 * Fast path: a read first tries preadv2(RWF_NOWAIT) on the calling thread
 * (the I/O context's). Data in the page cache is copied at once, without a
 * round trip through libuv's thread pool, which for a cached 64 KiB read
 * costs more than the copy; on a miss (EAGAIN) or for the part a partial
 * read left, the request goes through the thread pool as before. Writes try
 * pwritev2(RWF_NOWAIT) the same way, but most file systems refuse buffered
 * nowait writes (EOPNOTSUPP): a file that refuses once is remembered and
 * written through the thread pool only. A plain synchronous write is not
 * used instead: it can sleep in dirty-page throttling or block allocation
 * and would stall every other request, socket and message of the I/O
 * context meanwhile (and it measured no faster on ext4). O_DIRECT nodes
 * never take the fast path (a nowait direct read either fails or waits for
 * the disk on this thread), nor do requests over FAST_PATH_MAX_REQUEST
 * (their copy would hold up the context longer than the round trip costs
 * them). Fast-path completions are microtasks, so after
 * FAST_BYTES_PER_TURN bytes in one turn of the event loop further requests
 * wait for the loop to run before taking it. Any failure of the fast path
 * is left to the thread-pool path to report. Without the addon
 * (QBD_NATIVE=off) the nowait calls answer "unsupported" and everything
 * goes through the thread pool.
 */
import * as fs from 'node:fs';
import type { IoDriver } from '../../io/driver-io';
import type { IoNode } from '../../io/io-node';
import { IoError, STATUS } from '../../common/io-types';
import * as native from '../../../native/native';
import type { FileState } from './common';

function ioError(err: NodeJS.ErrnoException, what: string, node: IoNode<FileState>): IoError {
  return new IoError(err.code ?? 'EIO', `${what} ${node.state.filename}: ${err.message}`);
}

function preadOnce(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

function pwriteOnce(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

/** O_DIRECT needs aligned memory: copy through an aligned buffer when the caller's is not. */
function needsBounce(node: IoNode<FileState>, buf: Buffer): boolean {
  return node.state.direct && native.bufferAddressAlignment(buf) < node.state.bufferAlignment;
}

/** What RWF_NOWAIT can do on one open file, learned on first use (a reopen's new state starts afresh). */
interface NowaitSupport {
  read: boolean;
  write: boolean;
}

const nowaitSupport = new WeakMap<FileState, NowaitSupport>();

function nowaitOf(state: FileState): NowaitSupport {
  let s = nowaitSupport.get(state);
  if (!s) {
    // O_DIRECT bypasses the page cache: a nowait request there either fails or waits for the disk on this thread.
    s = { read: !state.direct, write: !state.direct };
    nowaitSupport.set(state, s);
  }
  return s;
}

/**
 * Bytes the fast path may move in one turn of this thread's event loop:
 * requests served from the page cache complete as microtasks, and a copy
 * loop made only of them would otherwise keep the context's sockets and
 * messages waiting. Past the budget a request waits for the next turn.
 */
const FAST_BYTES_PER_TURN = 8 << 20;
/**
 * Larger requests go straight to the thread pool: its round trip is small
 * beside their copy, and a copy of many megabytes on this thread would hold
 * up everything else the context serves.
 */
const FAST_PATH_MAX_REQUEST = 1 << 20;
let fastBytesThisTurn = 0;
let turnScheduled = false;

/** Counts `bytes` against this turn's budget; false when the budget is spent. */
function spendFastBytes(bytes: number): boolean {
  if (!turnScheduled) {
    turnScheduled = true;
    setImmediate(() => {
      turnScheduled = false;
      fastBytesThisTurn = 0;
    });
  }
  if (fastBytesThisTurn >= FAST_BYTES_PER_TURN) return false;
  fastBytesThisTurn += bytes;
  return true;
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Waits, if the budget is spent, until the event loop has run and `bytes` fit in a new turn's budget. */
async function waitForBudget(bytes: number): Promise<void> {
  do await nextTurn();
  while (!spendFastBytes(bytes));
}

type Nowait = (fd: number, buf: Uint8Array, offset: number) => number;

/**
 * One nowait transfer on this thread: the bytes moved (0 up to all of
 * `buf`), or 0 when the kernel would have waited or failed; the caller
 * moves the rest through the thread pool, which reports any error. -1: a
 * read found the end of the file at `offset`.
 */
function transferNowait(call: Nowait, support: NowaitSupport, kind: 'read' | 'write', state: FileState, buf: Buffer, offset: number): number {
  let n: number;
  try {
    n = call(state.fd, buf, offset);
  } catch {
    return 0;
  }
  if (n === native.NOWAIT_UNSUPPORTED) support[kind] = false;
  if (n === 0 && buf.length > 0 && kind === 'read') return -1;
  return Math.max(0, n);
}

async function readFull(node: IoNode<FileState>, offset: number, buf: Buffer): Promise<void> {
  const support = nowaitOf(node.state);
  let done = 0;
  if (support.read && buf.length <= FAST_PATH_MAX_REQUEST) {
    if (!spendFastBytes(buf.length)) await waitForBudget(buf.length);
    done = transferNowait(native.readNowait, support, 'read', node.state, buf, offset);
    if (done === -1) {
      buf.fill(0);
      return;
    }
  }
  while (done < buf.length) {
    const n = await preadOnce(node.state.fd, buf.subarray(done), offset + done);
    if (n === 0) {
      // Past the end of the file (it shrank, or its size is not aligned): reads as zeros.
      buf.fill(0, done);
      return;
    }
    done += n;
  }
}

async function writeFull(node: IoNode<FileState>, offset: number, buf: Buffer): Promise<void> {
  const support = nowaitOf(node.state);
  let done = 0;
  if (support.write && buf.length <= FAST_PATH_MAX_REQUEST) {
    if (!spendFastBytes(buf.length)) await waitForBudget(buf.length);
    done = transferNowait(native.writeNowait, support, 'write', node.state, buf, offset);
  }
  while (done < buf.length) {
    done += await pwriteOnce(node.state.fd, buf.subarray(done), offset + done);
  }
}

/** The discards passed to the system (BlockStatsSpecificFile), in the node's stats so they move with it. */
interface DiscardCounts extends Record<string, number> {
  'discard-nb-ok': number;
  'discard-nb-failed': number;
  'discard-bytes-ok': number;
}

function discardCounts(node: IoNode<FileState>): DiscardCounts {
  node.stats.driver ??= { 'discard-nb-ok': 0, 'discard-nb-failed': 0, 'discard-bytes-ok': 0 };
  return node.stats.driver as DiscardCounts;
}

function isUnsupported(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EINVAL' || code === 'ENOSYS';
}

export const fileIo: IoDriver<FileState> = {
  name: 'file',
  attach: (desc) => desc.state as FileState,
  // A format above may have grown the file since the GS half sized it.
  currentLength: (state) => (state.isBlockDevice ? undefined : Math.ceil(fs.fstatSync(state.fd).size / 512) * 512),

  async read(node, offset, buf) {
    try {
      if (needsBounce(node, buf)) {
        const bounce = native.alignedBuffer(buf.length, node.state.bufferAlignment);
        await readFull(node, offset, bounce);
        bounce.copy(buf);
      } else {
        await readFull(node, offset, buf);
      }
    } catch (err) {
      throw ioError(err as NodeJS.ErrnoException, 'read from', node);
    }
  },

  async write(node, offset, buf, flags) {
    try {
      if (needsBounce(node, buf)) {
        const bounce = native.alignedBuffer(buf.length, node.state.bufferAlignment);
        buf.copy(bounce);
        await writeFull(node, offset, bounce);
      } else {
        await writeFull(node, offset, buf);
      }
      if (flags.fua) await fdatasync(node.state.fd);
    } catch (err) {
      throw ioError(err as NodeJS.ErrnoException, 'write to', node);
    }
  },

  async writeZeroes(node, offset, bytes, flags) {
    if (!native.nativeAvailable) throw new IoError('ENOTSUP', 'no native zeroing');
    const { fd, isBlockDevice } = node.state;
    try {
      if (isBlockDevice) {
        if (flags.noFallback && !flags.mayUnmap) throw new IoError('ENOTSUP', 'fast zeroing needs unmap on block devices');
        await native.blockDeviceZeroOut(fd, offset, bytes);
      } else if (flags.mayUnmap) {
        await native.punchHole(fd, offset, bytes);
      } else {
        await native.zeroRange(fd, offset, bytes);
      }
    } catch (err) {
      if (isUnsupported(err)) throw new IoError('ENOTSUP', `zeroing not supported on ${node.state.filename}`);
      throw ioError(err as NodeJS.ErrnoException, 'zero', node);
    }
    if (flags.fua) await fdatasync(fd);
  },

  async discard(node, offset, bytes) {
    if (!native.nativeAvailable) return;
    const { fd, isBlockDevice } = node.state;
    const counts = discardCounts(node);
    try {
      if (isBlockDevice) await native.blockDeviceDiscard(fd, offset, bytes);
      else await native.punchHole(fd, offset, bytes);
      counts['discard-nb-ok']++;
      counts['discard-bytes-ok'] += bytes;
    } catch (err) {
      // As in QEMU, a discard the system refused counts as failed, even one it cannot do at all.
      counts['discard-nb-failed']++;
      // Discard is a hint; a file system that cannot punch holes simply keeps the data.
      if (!isUnsupported(err)) throw ioError(err as NodeJS.ErrnoException, 'discard on', node);
    }
  },

  driverStats: (node) => ({ ...discardCounts(node) }),

  async flush(node) {
    try {
      await fdatasync(node.state.fd);
    } catch (err) {
      throw ioError(err as NodeJS.ErrnoException, 'flush of', node);
    }
  },

  async blockStatus(node, offset, bytes) {
    const data = { status: STATUS.DATA | STATUS.ALLOCATED | STATUS.OFFSET_VALID, bytes, map: offset, file: node.name, depth: 1 };
    if (!native.nativeAvailable || node.state.isBlockDevice) return data;
    const { fd } = node.state;
    try {
      const nextData = native.seekData(fd, offset);
      if (nextData === -1 || nextData > offset) {
        // A hole up to the next data (or to the end of the file).
        const holeEnd = nextData === -1 ? offset + bytes : Math.min(nextData, offset + bytes);
        return { status: STATUS.ZERO | STATUS.ALLOCATED | STATUS.OFFSET_VALID, bytes: holeEnd - offset, map: offset, file: node.name, depth: 1 };
      }
      const nextHole = native.seekHole(fd, offset);
      const dataEnd = nextHole === -1 ? offset + bytes : Math.min(nextHole, offset + bytes);
      return { ...data, bytes: Math.max(1, dataEnd - offset) };
    } catch {
      return data;
    }
  },

  async truncate(node, length, _exact, preallocation) {
    const { fd, isBlockDevice } = node.state;
    if (isBlockDevice) {
      if (length > node.length) throw new IoError('ENOTSUP', 'Cannot grow device files');
      return node.length;
    }
    try {
      const old = node.length;
      await new Promise<void>((resolve, reject) => fs.ftruncate(fd, length, (err) => (err ? reject(err) : resolve())));
      if (length > old && preallocation === 'falloc') await native.allocate(fd, old, length - old);
      if (length > old && preallocation === 'full') await writeZerosFull(node, old, length - old);
      // QEMU counts lengths in 512-byte sectors; the partial last sector reads as zeros.
      return Math.ceil(length / 512) * 512;
    } catch (err) {
      throw ioError(err as NodeJS.ErrnoException, 'resize', node);
    }
  },
};

async function writeZerosFull(node: IoNode<FileState>, offset: number, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(Math.min(bytes, 1 << 20));
  for (let done = 0; done < bytes; done += chunk.length) {
    await writeFull(node, offset + done, chunk.subarray(0, Math.min(chunk.length, bytes - done)));
  }
}
