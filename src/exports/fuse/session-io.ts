/**
 * One FUSE export's session, served in its node's I/O context: requests
 * are read from the mounted /dev/fuse descriptor without blocking when the
 * event loop says it is readable, each one whole (the kernel hands out one
 * request per read), and answered with one write each. The file system has
 * a single inode, the root, which is a regular file holding the node's
 * data; what each request does follows qemu-storage-daemon's FUSE export
 * (see docs/exports.md).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { log } from '../../common/log';
import { STATUS } from '../../block/common/io-types';
import type { IoBackend } from '../../block/io/backend';
import type { IoNode } from '../../block/io/io-node';
import { readFd, watchFd, writeFd, type FdWatch } from '../../native/fd-watch';
import { releaseReadBuffer, REPLY_HEADROOM, takeReplyBuffer } from '../read-buffers';
import type { FuseExportEntry } from './messages';
import * as p from './protocol';

const E = os.constants.errno;

/** The largest WRITE the kernel is allowed to send, and the pages it may put in one request. */
export const MAX_WRITE = 1024 * 1024;
const MAX_PAGES = MAX_WRITE / 4096;
/** How long the kernel may cache the file's attributes, in seconds. */
const ATTR_VALID_SECONDS = 1;
/** Requests read in one wake-up before the loop gets its turn again. */
const READS_PER_WAKEUP = 64;
/** Zeroing and discarding go in pieces no larger than this. */
const MAX_RANGE_CHUNK = 1 << 30;
/** WRITE payloads at least this big keep their receive buffer instead of being copied out. */
const KEEP_BUFFER_MIN = 64 * 1024;
const SPARE_BUFFERS = 4;
const RECEIVE_BUFFER_SIZE = MAX_WRITE + p.READ_BUFFER_OVERHEAD;

/** A failure answered to the kernel as -errno. */
class FuseError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

/** The errno number of an I/O failure (IoError, node:fs or channel errors carry the name in `code`). */
function errnoOf(err: unknown): number {
  if (err instanceof FuseError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  const n = typeof code === 'string' ? (E as Record<string, number>)[code] : undefined;
  return n ?? E.EIO;
}

/** Calls `resize` on the main loop: the node's new length, or a failure. */
export type Resizer = (length: number, preallocation: 'off' | 'falloc') => Promise<number>;

export class FuseSession {
  private watch: FdWatch | undefined;
  private receive: Buffer = Buffer.allocUnsafe(RECEIVE_BUFFER_SIZE);
  private readonly spare: Buffer[] = [];
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private stopped = false;
  private initialized = false;
  private mode: number;
  private uid: number;
  private gid: number;

  constructor(
    private readonly entry: FuseExportEntry,
    private readonly backend: IoBackend,
    private readonly resize: Resizer,
  ) {
    this.mode = entry.mode;
    this.uid = entry.uid;
    this.gid = entry.gid;
  }

  start(): void {
    this.watch = watchFd(this.entry.fd, false, (status) => this.onReadable(status));
  }

  /**
   * Stops reading and lets the requests in flight finish and answer. The
   * main loop, which opened the descriptor, closes it afterwards.
   */
  async stop(): Promise<void> {
    this.stopReading();
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private stopReading(): void {
    this.stopped = true;
    this.watch?.close();
    this.watch = undefined;
  }

  private onReadable(status: number): void {
    // The event loop reports POLLERR (the file system was unmounted, the connection aborted) as EBADF.
    if (status < 0) return this.lost(-E.ENODEV);
    for (let i = 0; i < READS_PER_WAKEUP && !this.stopped; i++) {
      const n = readFd(this.entry.fd, this.receive);
      if (n === -E.EAGAIN) return;
      // ENOENT: the request was interrupted before it could be read.
      if (n === -E.EINTR || n === -E.ENOENT) continue;
      if (n <= 0) return this.lost(n);
      this.take(n);
    }
  }

  /** The file system was unmounted (ENODEV) or the connection aborted: nothing more will come. */
  private lost(status: number): void {
    if (status === -E.ENODEV) log.debug({ export: this.entry.id }, 'FUSE session ended');
    else log.warn({ export: this.entry.id, errno: -status }, 'FUSE session failed');
    this.stopReading();
  }

  /** Parses the request just read and starts serving it. */
  private take(n: number): void {
    const buf = this.receive;
    if (n < p.IN_HEADER_SIZE) {
      log.warn({ export: this.entry.id, bytes: n }, 'FUSE request shorter than its header dropped');
      return;
    }
    const h = p.parseInHeader(buf);
    if (h.len !== n) {
      log.warn({ export: this.entry.id, bytes: n, len: h.len }, 'FUSE request with a wrong length dropped');
      return;
    }
    const bodyLength = n - p.IN_HEADER_SIZE;
    if (bodyLength < (p.MIN_BODY[h.opcode] ?? 0)) return this.replyError(h.unique, E.EINVAL);
    let body = buf.subarray(p.IN_HEADER_SIZE, n);
    let kept: Buffer | undefined;
    if (h.opcode === p.OP.WRITE && bodyLength >= KEEP_BUFFER_MIN) {
      // The payload is used after this returns: the buffer goes with it, and reading goes on in another.
      kept = buf;
      this.receive = this.spare.pop() ?? Buffer.allocUnsafe(RECEIVE_BUFFER_SIZE);
    } else if (h.opcode === p.OP.WRITE) {
      body = Buffer.from(body);
    }
    this.inFlight++;
    this.serve(h, body).then(
      (reply) => {
        if (reply) this.send(reply);
        if (kept && this.spare.length < SPARE_BUFFERS) this.spare.push(kept);
      },
      (err: unknown) => {
        // A failed write's buffer is not reused: pieces of the write may still be reading it.
        if (!(err instanceof FuseError)) log.debug({ export: this.entry.id, op: h.opcode, err: (err as Error).message }, 'FUSE request failed');
        this.replyError(h.unique, errnoOf(err));
      },
    ).finally(() => {
      if (--this.inFlight === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    });
  }

  private send(reply: Buffer): void {
    const n = writeFd(this.entry.fd, reply);
    // ENOENT: the kernel gave up on the request (interrupted, or the connection is gone).
    if (n < 0 && n !== -E.ENOENT && n !== -E.ENODEV) log.warn({ export: this.entry.id, errno: -n }, 'FUSE reply could not be written');
  }

  private replyError(unique: bigint, errno: number): void {
    const out = Buffer.alloc(p.OUT_HEADER_SIZE);
    p.writeOutHeader(out, unique, -errno);
    this.send(out);
  }

  /** A reply buffer with room for the header in front of `size` bytes of payload. */
  private static replyBuffer(unique: bigint, size: number): Buffer {
    const out = Buffer.allocUnsafe(p.OUT_HEADER_SIZE + size);
    p.writeOutHeader(out, unique, 0);
    return out;
  }

  private static payloadReply(unique: bigint, size: number, fill: (payload: Buffer) => void): Buffer {
    const out = FuseSession.replyBuffer(unique, size);
    fill(out.subarray(p.OUT_HEADER_SIZE));
    return out;
  }

  /** Serves one request: the reply to send, or undefined for requests the kernel expects no answer to. */
  private async serve(h: p.InHeader, body: Buffer): Promise<Buffer | undefined> {
    const u = h.unique;
    if (!this.initialized && h.opcode !== p.OP.INIT) throw new FuseError(E.EIO);
    switch (h.opcode) {
      case p.OP.INIT:
        return this.init(u, body);
      case p.OP.LOOKUP:
        // The root is a file: it has no names under it.
        throw new FuseError(E.ENOENT);
      case p.OP.GETATTR:
        if (h.nodeid !== BigInt(p.ROOT_ID)) throw new FuseError(E.ENOENT);
        return this.attrReply(u);
      case p.OP.SETATTR:
        return this.setattr(u, p.parseSetattrIn(body));
      case p.OP.OPEN:
        return FuseSession.payloadReply(u, p.OPEN_OUT_SIZE, (out) => p.encodeOpenOut(out, p.FOPEN_DIRECT_IO | p.FOPEN_PARALLEL_DIRECT_WRITES));
      case p.OP.READ:
        return this.read(u, p.parseIoIn(body));
      case p.OP.WRITE:
        return this.write(u, p.parseIoIn(body), body.subarray(p.WRITE_IN_SIZE));
      case p.OP.STATFS:
        return FuseSession.payloadReply(u, p.STATFS_OUT_SIZE, (out) => p.encodeStatfsOut(out, 512, 255));
      case p.OP.FLUSH:
      case p.OP.FSYNC:
        await this.backend.flush();
        return FuseSession.replyBuffer(u, 0);
      case p.OP.RELEASE:
      case p.OP.DESTROY:
        return FuseSession.replyBuffer(u, 0);
      case p.OP.FALLOCATE:
        await this.fallocate(p.parseFallocateIn(body));
        return FuseSession.replyBuffer(u, 0);
      case p.OP.LSEEK: {
        const at = await this.lseek(p.parseLseekIn(body));
        return FuseSession.payloadReply(u, p.LSEEK_OUT_SIZE, (out) => out.writeBigUInt64LE(BigInt(at), 0));
      }
      case p.OP.FORGET:
      case p.OP.BATCH_FORGET:
      case p.OP.INTERRUPT:
        // No reply: the kernel expects none (an interrupted request is still answered when it ends).
        return undefined;
      default:
        throw new FuseError(E.ENOSYS);
    }
  }

  private init(u: bigint, body: Buffer): Buffer {
    const init = p.parseInitIn(body);
    if (init.major < p.KERNEL_VERSION) throw new FuseError(E.EPROTO);
    if (init.major > p.KERNEL_VERSION) {
      // Only our major version goes back; the kernel then sends INIT again in it.
      return FuseSession.payloadReply(u, 8, (out) => {
        out.writeUInt32LE(p.KERNEL_VERSION, 0);
        out.writeUInt32LE(p.KERNEL_MINOR_VERSION, 4);
      });
    }
    const wanted = p.INIT_FLAGS.ASYNC_READ | p.INIT_FLAGS.BIG_WRITES | p.INIT_FLAGS.ASYNC_DIO | p.INIT_FLAGS.MAX_PAGES;
    this.initialized = true;
    return FuseSession.payloadReply(u, p.INIT_OUT_SIZE, (out) =>
      p.encodeInitOut(out, {
        major: p.KERNEL_VERSION,
        minor: Math.min(init.minor, p.KERNEL_MINOR_VERSION),
        maxReadahead: init.maxReadahead,
        flags: init.flags & wanted,
        maxWrite: MAX_WRITE,
        timeGran: 1,
        maxPages: MAX_PAGES,
      }),
    );
  }

  private async attrReply(u: bigint): Promise<Buffer> {
    const size = this.backend.length;
    const allocated = await allocatedBytes(this.backend.root);
    const attr: p.Attr = {
      ino: p.ROOT_ID,
      size,
      // As the reference: the host's allocation, or the whole length where that is unknown.
      blocks: Math.ceil((allocated > 0 ? allocated : size) / 512),
      time: Math.floor(Date.now() / 1000),
      mode: this.mode,
      uid: this.uid,
      gid: this.gid,
      blksize: this.backend.root.requestAlignment,
    };
    return FuseSession.payloadReply(u, p.ATTR_OUT_SIZE, (out) => p.encodeAttrOut(out, ATTR_VALID_SECONDS, attr));
  }

  private async setattr(u: bigint, a: p.SetattrIn): Promise<Buffer> {
    // The descriptor and lock owner only say which open file asked.
    const valid = a.valid & ~(p.FATTR.FH | p.FATTR.LOCKOWNER);
    let supported = p.FATTR.SIZE | p.FATTR.MODE;
    if (this.entry.allowOther) supported |= p.FATTR.UID | p.FATTR.GID;
    if ((valid & ~supported) !== 0) throw new FuseError(E.EOPNOTSUPP);
    if (valid & p.FATTR.MODE) {
      // Without allow_other nobody but the owner gets in: bits for others make no sense.
      if (!this.entry.allowOther && (a.mode & 0o077) !== 0) throw new FuseError(E.EPERM);
      if (!this.entry.writable && (a.mode & 0o222) !== 0) throw new FuseError(E.EROFS);
    }
    if (valid & p.FATTR.SIZE) {
      if (!this.entry.writable) throw new FuseError(E.EACCES);
      if (!Number.isSafeInteger(a.size)) throw new FuseError(E.EINVAL);
      await this.resize(a.size, 'off');
    }
    if (valid & p.FATTR.MODE) this.mode = (a.mode & 0o7777) | p.S_IFREG;
    if (valid & p.FATTR.UID) this.uid = a.uid;
    if (valid & p.FATTR.GID) this.gid = a.gid;
    return this.attrReply(u);
  }

  /** Sends its reply itself, from a reused buffer that goes back to the pool once written. */
  private async read(u: bigint, r: p.IoIn): Promise<undefined> {
    if (r.size > p.MAX_READ || !Number.isSafeInteger(r.offset)) throw new FuseError(E.EINVAL);
    const length = this.backend.length;
    // Reads end at the end of the file: short at the end, empty past it.
    const size = r.offset >= length ? 0 : Math.min(r.size, length - r.offset);
    const { whole, data } = takeReplyBuffer(size);
    // A failed read's buffer is not taken back: pieces of it may still be filling it.
    if (size > 0) await this.backend.read(r.offset, data);
    const out = whole.subarray(REPLY_HEADROOM - p.OUT_HEADER_SIZE, REPLY_HEADROOM + size);
    p.writeOutHeader(out, u, 0);
    this.send(out);
    // The write to /dev/fuse copied the reply: the buffer is free again.
    releaseReadBuffer(whole);
    return undefined;
  }

  private async write(u: bigint, w: p.IoIn, data: Buffer): Promise<Buffer> {
    if (w.size > data.length || !Number.isSafeInteger(w.offset) || !Number.isSafeInteger(w.offset + w.size)) throw new FuseError(E.EINVAL);
    if (!this.entry.writable) throw new FuseError(E.EACCES);
    let size = w.size;
    const length = this.backend.length;
    if (w.offset + size > length) {
      if (this.entry.growable) await this.resize(w.offset + size, 'off');
      // A write that starts at or past the end of a file that cannot grow fails, as in the reference.
      else if (w.offset >= length) throw new FuseError(E.EIO);
      else size = length - w.offset;
    }
    if (size > 0) await this.backend.write(w.offset, data.subarray(0, size));
    return FuseSession.payloadReply(u, p.WRITE_OUT_SIZE, (out) => {
      out.writeUInt32LE(size, 0);
      out.writeUInt32LE(0, 4);
    });
  }

  private async fallocate(f: p.FallocateIn): Promise<void> {
    if (!this.entry.writable) throw new FuseError(E.EACCES);
    if (!Number.isSafeInteger(f.offset) || !Number.isSafeInteger(f.length) || !Number.isSafeInteger(f.offset + f.length)) throw new FuseError(E.EINVAL);
    const length = this.backend.length;
    let bytes = f.length;
    if (f.mode & p.FALLOC_FL_KEEP_SIZE) bytes = Math.min(bytes, length - f.offset);
    if (f.mode === 0) {
      // Space can only be reserved at the end, by growing the file.
      if (f.offset < length) throw new FuseError(E.EOPNOTSUPP);
      if (f.offset > length) await this.resize(f.offset, 'off');
      await this.resize(f.offset + bytes, 'falloc');
    } else if (f.mode & p.FALLOC_FL_PUNCH_HOLE) {
      if (!(f.mode & p.FALLOC_FL_KEEP_SIZE)) throw new FuseError(E.EINVAL);
      await inChunks(f.offset, bytes, (off, len) => this.backend.discard(off, len));
    } else if (f.mode & p.FALLOC_FL_ZERO_RANGE) {
      if (!(f.mode & p.FALLOC_FL_KEEP_SIZE) && f.offset + bytes > length) await this.resize(f.offset + bytes, 'off');
      await inChunks(f.offset, bytes, (off, len) => this.backend.writeZeroes(off, len));
    } else {
      throw new FuseError(E.EOPNOTSUPP);
    }
  }

  private async lseek(s: p.LseekIn): Promise<number> {
    if (s.whence !== p.SEEK_DATA && s.whence !== p.SEEK_HOLE) throw new FuseError(E.EINVAL);
    if (!Number.isSafeInteger(s.offset)) throw new FuseError(E.ENXIO);
    const length = this.backend.length;
    let offset = s.offset;
    while (offset < length) {
      const st = await this.backend.blockStatus(offset, length - offset);
      // Data below an unallocated range of a format node shows through it.
      const data = (st.status & STATUS.DATA) !== 0 || ((st.depth ?? 0) > 1 && (st.status & STATUS.ZERO) === 0);
      if (data === (s.whence === p.SEEK_DATA)) return offset;
      offset += st.bytes;
    }
    // The end of the file is where the last hole starts; past it there is nothing.
    if (offset > length || s.whence === p.SEEK_DATA) throw new FuseError(E.ENXIO);
    return offset;
  }
}

async function inChunks(offset: number, bytes: number, fn: (offset: number, bytes: number) => Promise<void>): Promise<void> {
  if (bytes < 0) throw new FuseError(E.EIO);
  for (let done = 0; done < bytes; done += MAX_RANGE_CHUNK) await fn(offset + done, Math.min(MAX_RANGE_CHUNK, bytes - done));
}

/**
 * Bytes the node takes on the host: those of the file at the bottom of its
 * chain of `file` children, 0 where there is no such file (the caller then
 * counts the whole length, as the reference does).
 */
async function allocatedBytes(node: IoNode): Promise<number> {
  let n: IoNode | undefined = node;
  while (n && n.driver.name !== 'file' && n.driver.name !== 'host_device') n = n.file;
  const fd = (n?.state as { fd?: unknown } | undefined)?.fd;
  if (typeof fd !== 'number') return 0;
  return new Promise((resolve) =>
    fs.fstat(fd, (err, st) => resolve(err || st.isBlockDevice() ? 0 : st.blocks * 512)),
  );
}
