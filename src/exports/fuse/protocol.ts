/**
 * The FUSE kernel protocol as far as a single-file export speaks it: the
 * opcodes, the layouts of the structures it reads and writes (little-endian
 * host order, as /dev/fuse uses), and their fixed sizes. Plain data and
 * pure functions, usable from either world.
 */

/** The protocol version this server implements (major 7; minor as the kernel headers it was written against). */
export const KERNEL_VERSION = 7;
export const KERNEL_MINOR_VERSION = 38;

export const ROOT_ID = 1;

/** Mount option max_read, as the reference mounts with (its bounce buffer limit). */
export const MAX_READ = 64 * 1024 * 1024;

export const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  FLUSH: 25,
  INIT: 26,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  LSEEK: 46,
} as const;

/** fuse_init_in/out flags this server asks for (only those the kernel offers are kept). */
export const INIT_FLAGS = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  MAX_PAGES: 1 << 22,
} as const;

/** fuse_setattr_in.valid bits. */
export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
} as const;

/** fuse_open_out.open_flags: no page cache; writes on the file may run in parallel. */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6;

/** fallocate(2) modes. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

export const S_IFREG = 0o100000;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const INIT_IN_MIN_SIZE = 16;
export const INIT_OUT_SIZE = 64;
export const GETATTR_IN_SIZE = 16;
export const SETATTR_IN_SIZE = 88;
export const OPEN_IN_SIZE = 8;
export const OPEN_OUT_SIZE = 16;
export const READ_IN_SIZE = 40;
export const WRITE_IN_SIZE = 40;
export const WRITE_OUT_SIZE = 8;
export const FSYNC_IN_SIZE = 16;
export const FALLOCATE_IN_SIZE = 32;
export const LSEEK_IN_SIZE = 24;
export const LSEEK_OUT_SIZE = 8;
export const ATTR_OUT_SIZE = 104;
export const STATFS_OUT_SIZE = 80;

/** A read buffer must hold the largest request: a WRITE header and max_write bytes, and at least 8 KiB. */
export const READ_BUFFER_OVERHEAD = 4096;

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function parseInHeader(buf: Buffer): InHeader {
  return {
    len: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
  };
}

/** Writes the reply header at the start of `buf` (whose length is the whole reply). */
export function writeOutHeader(buf: Buffer, unique: bigint, error: number): void {
  buf.writeUInt32LE(buf.length, 0);
  buf.writeInt32LE(error, 4);
  buf.writeBigUInt64LE(unique, 8);
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function parseInitIn(body: Buffer): InitIn {
  return { major: body.readUInt32LE(0), minor: body.readUInt32LE(4), maxReadahead: body.readUInt32LE(8), flags: body.readUInt32LE(12) };
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

export function encodeInitOut(out: Buffer, v: InitOut): void {
  out.fill(0);
  out.writeUInt32LE(v.major, 0);
  out.writeUInt32LE(v.minor, 4);
  out.writeUInt32LE(v.maxReadahead, 8);
  out.writeUInt32LE(v.flags >>> 0, 12);
  // max_background and congestion_threshold 0: the kernel keeps its defaults.
  out.writeUInt32LE(v.maxWrite, 20);
  out.writeUInt32LE(v.timeGran, 24);
  out.writeUInt16LE(v.maxPages, 28);
}

export interface SetattrIn {
  valid: number;
  size: number;
  mode: number;
  uid: number;
  gid: number;
}

export function parseSetattrIn(body: Buffer): SetattrIn {
  return {
    valid: body.readUInt32LE(0),
    size: Number(body.readBigUInt64LE(16)),
    mode: body.readUInt32LE(68),
    uid: body.readUInt32LE(76),
    gid: body.readUInt32LE(80),
  };
}

/** fuse_read_in and fuse_write_in share their first fields. */
export interface IoIn {
  offset: number;
  size: number;
}

export function parseIoIn(body: Buffer): IoIn {
  return { offset: Number(body.readBigUInt64LE(8)), size: body.readUInt32LE(16) };
}

export interface FallocateIn {
  offset: number;
  length: number;
  mode: number;
}

export function parseFallocateIn(body: Buffer): FallocateIn {
  return { offset: Number(body.readBigUInt64LE(8)), length: Number(body.readBigUInt64LE(16)), mode: body.readUInt32LE(24) };
}

export interface LseekIn {
  offset: number;
  whence: number;
}

export function parseLseekIn(body: Buffer): LseekIn {
  return { offset: Number(body.readBigUInt64LE(8)), whence: body.readUInt32LE(16) };
}

export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  /** Seconds since the epoch, for atime, mtime and ctime alike. */
  time: number;
  mode: number;
  uid: number;
  gid: number;
  blksize: number;
}

/** fuse_attr_out: how long the kernel may cache the attributes, then fuse_attr. */
export function encodeAttrOut(out: Buffer, validSeconds: number, a: Attr): void {
  out.fill(0);
  out.writeBigUInt64LE(BigInt(validSeconds), 0);
  const at = 16;
  out.writeBigUInt64LE(BigInt(a.ino), at);
  out.writeBigUInt64LE(BigInt(a.size), at + 8);
  out.writeBigUInt64LE(BigInt(a.blocks), at + 16);
  for (const off of [24, 32, 40]) out.writeBigUInt64LE(BigInt(a.time), at + off);
  out.writeUInt32LE(a.mode, at + 60);
  out.writeUInt32LE(1, at + 64); // nlink
  out.writeUInt32LE(a.uid, at + 68);
  out.writeUInt32LE(a.gid, at + 72);
  out.writeUInt32LE(a.blksize, at + 80);
}

export function encodeOpenOut(out: Buffer, openFlags: number): void {
  out.fill(0);
  out.writeUInt32LE(openFlags, 8);
}

/** fuse_kstatfs: nothing to count in a one-file file system but names and the block size. */
export function encodeStatfsOut(out: Buffer, bsize: number, namelen: number): void {
  out.fill(0);
  out.writeUInt32LE(bsize, 40);
  out.writeUInt32LE(namelen, 44);
}

/** The smallest body each request needs; shorter ones are refused with EINVAL. */
export const MIN_BODY: Partial<Record<number, number>> = {
  [OP.INIT]: INIT_IN_MIN_SIZE,
  [OP.GETATTR]: GETATTR_IN_SIZE,
  [OP.SETATTR]: SETATTR_IN_SIZE,
  [OP.OPEN]: OPEN_IN_SIZE,
  [OP.READ]: READ_IN_SIZE,
  [OP.WRITE]: WRITE_IN_SIZE,
  [OP.FSYNC]: FSYNC_IN_SIZE,
  [OP.FALLOCATE]: FALLOCATE_IN_SIZE,
  [OP.LSEEK]: LSEEK_IN_SIZE,
};
