/**
 * Linux system calls that Node lacks and a block daemon needs: hole detection
 * (lseek SEEK_DATA/SEEK_HOLE), fallocate, block device ioctls, open file
 * description (OFD) byte-range locks as QEMU takes them, and aligned memory
 * for O_DIRECT.
 *
 * This is the only module the rest of qbd imports for them. It loads the
 * N-API addon `build/Release/qbd_native.node` (built by node-gyp at install
 * time) and falls back to plain TypeScript when the addon is missing or fails
 * to load, or when the environment sets QBD_NATIVE=off. `nativeAvailable`
 * says which one is in use and `nativeLoadError` why the addon is not.
 *
 * Every function takes a file descriptor opened with node:fs; offsets and
 * lengths are non-negative safe integers. Failures are Errors with `code` set
 * to the errno name, as node:fs reports them ('EINVAL', 'ENOTSUP', ...). Bad
 * arguments throw (or reject) TypeError/RangeError with code
 * 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE' or 'ERR_OUT_OF_RANGE'.
 *
 * What the fallback does instead:
 * - seekData/seekHole: a regular file is all data up to its size (no holes);
 *   other kinds of file throw ENOTSUP.
 * - punchHole/zeroRange/blockDeviceZeroOut: write zeroes in chunks of at most
 *   1 MiB; with KEEP_SIZE semantics the range is clipped to the file's size.
 *   The ranges read back as zero but take disk space.
 * - allocate: reserves no space, only extends a regular file with ftruncate
 *   when the range ends past its size.
 * - blockDeviceSize/logicalBlockSize/blockDeviceDiscard and the OFD lock
 *   calls: ENOTSUP (callers treat locking=auto as off).
 * - alignedBuffer: a zeroed Buffer of no known alignment;
 *   bufferAddressAlignment always answers 1, so O_DIRECT users can tell.
 *
 * - readNowait/writeNowait: NOWAIT_UNSUPPORTED, so callers take their
 *   asynchronous path.
 *
 * readNowait/writeNowait (preadv2/pwritev2 with RWF_NOWAIT) move data on the
 * calling thread only when no disk wait is needed: a read served by the page
 * cache, a write the file system can take without blocking. They answer the
 * bytes moved (possibly fewer than asked), NOWAIT_WOULD_BLOCK, or
 * NOWAIT_UNSUPPORTED when the kernel or file system cannot do it at all
 * (buffered RWF_NOWAIT writes, for one, exist only on some file systems).
 * An addon built before they existed still serves everything else; they
 * answer NOWAIT_UNSUPPORTED then.
 *
 * `dupFd` (a second descriptor for an open socket, so one thread can hand a
 * connection to another) is looked up on its own: an addon built before it
 * existed still serves everything else, and dupFd then throws ENOTSUP.
 *
 * seekData/seekHole move the descriptor's file position; qbd does positional
 * I/O only, so that does not matter.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The lock kinds a test can ask about. */
export type LockType = 'read' | 'write';

/** What ofdSetLock can do to a byte range. */
export type LockChange = LockType | 'unlock';

export interface LockTestResult {
  /** Another open file description holds a lock that would block the test. */
  conflict: boolean;
  /** The holder's process, when the kernel knows it (never for OFD locks). */
  pid?: number;
}

/** The shape of errors raised by these functions. */
export interface NativeError extends Error {
  code: string;
  /** Negative errno, as in node:fs errors. */
  errno?: number;
  syscall?: string;
}

export interface NativeOps {
  /** Offset of the first data byte at or after `offset`; -1 if none (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** Offset of the first hole at or after `offset` (the end of file counts as a hole); -1 past the end. */
  seekHole(fd: number, offset: number): number;
  /** Deallocates the range; it reads back as zero and the size is kept. */
  punchHole(fd: number, offset: number, length: number): Promise<void>;
  /** Makes the range read as zero; without keepSize it may extend the file. */
  zeroRange(fd: number, offset: number, length: number, keepSize?: boolean): Promise<void>;
  /** Allocates space for the range (fallocate mode 0), extending the file if needed. */
  allocate(fd: number, offset: number, length: number): Promise<void>;
  /** Size in bytes of a block device (BLKGETSIZE64). */
  blockDeviceSize(fd: number): number;
  /** Logical sector size of a block device (BLKSSZGET). */
  logicalBlockSize(fd: number): number;
  /** Discards a range of a block device (BLKDISCARD). */
  blockDeviceDiscard(fd: number, offset: number, length: number): Promise<void>;
  /** Zeroes a range of a block device (BLKZEROOUT). */
  blockDeviceZeroOut(fd: number, offset: number, length: number): Promise<void>;
  /**
   * Takes, converts or releases an OFD lock on [start, start + length);
   * length 0 means to the end of file. Never waits: a conflict throws EAGAIN
   * (or EACCES).
   */
  ofdSetLock(fd: number, start: number, length: number, type: LockChange): void;
  /** Asks whether a lock of `type` on the range would conflict with another holder. */
  ofdTestLock(fd: number, start: number, length: number, type: LockType): LockTestResult;
  /** A zero-filled Buffer whose first byte sits at a multiple of `alignment` (a power of two). */
  alignedBuffer(size: number, alignment: number): Buffer;
  /** The largest power of two, at most 4096, dividing the address of buf's first byte. */
  bufferAddressAlignment(buf: Uint8Array): number;
  /** preadv2(RWF_NOWAIT) into buf at `offset`: bytes read (0 at end of file), NOWAIT_WOULD_BLOCK or NOWAIT_UNSUPPORTED. */
  readNowait(fd: number, buf: Uint8Array, offset: number): number;
  /** pwritev2(RWF_NOWAIT) of buf at `offset`: bytes written, NOWAIT_WOULD_BLOCK or NOWAIT_UNSUPPORTED. */
  writeNowait(fd: number, buf: Uint8Array, offset: number): number;
}

/** readNowait/writeNowait: nothing moved without waiting for the disk (EAGAIN). */
export const NOWAIT_WOULD_BLOCK = -1;
/** readNowait/writeNowait: this kernel, file system or build cannot do it; stop trying on this file. */
export const NOWAIT_UNSUPPORTED = -2;

const ADDON_FILE = 'qbd_native.node';
const ZERO_CHUNK = 1024 * 1024;
const MAX_FD = 2 ** 31 - 1;
const MAX_BUFFER_SIZE = 2 ** 32;
const MAX_BUFFER_ALIGNMENT = 2 ** 30;
const ENOTSUP_ERRNO = 95;

/**
 * True for the errors that mean "this file or kernel cannot do that", so the
 * caller should do it another way (write zeroes, skip locking). Linux has one
 * errno for both names; the addon and node:fs call it ENOTSUP.
 */
export function isNotSupportedError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOTSUP' || code === 'EOPNOTSUPP';
}

// ---- fallback -------------------------------------------------------------

export function notSupported(what: string): NativeError {
  const err = new Error(`ENOTSUP: operation not supported, ${what} (native addon not loaded)`) as NativeError;
  err.code = 'ENOTSUP';
  err.errno = -ENOTSUP_ERRNO;
  err.syscall = what;
  return err;
}

function checkInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') {
    throw Object.assign(new TypeError(`${name} must be a number`), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw Object.assign(new RangeError(`${name} must be an integer in [${min}, ${max}]`), {
      code: 'ERR_OUT_OF_RANGE',
    });
  }
  return value;
}

function checkRange(fd: number, offset: number, length: number): void {
  checkInteger(fd, 'fd', 0, MAX_FD);
  checkInteger(offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
  checkInteger(length, 'length', 0, Number.MAX_SAFE_INTEGER);
}

function fstat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => {
    fs.fstat(fd, (err, stats) => (err ? reject(err) : resolve(stats)));
  });
}

function writeAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, buf, 0, length, position, (err, written) => (err ? reject(err) : resolve(written)));
  });
}

function ftruncate(fd: number, size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.ftruncate(fd, size, (err) => (err ? reject(err) : resolve()));
  });
}

async function writeZeroes(fd: number, offset: number, length: number): Promise<void> {
  const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK));
  let done = 0;
  while (done < length) {
    const written = await writeAt(fd, zeroes, Math.min(zeroes.length, length - done), offset + done);
    if (written <= 0) throw Object.assign(new Error('EIO: write made no progress, write'), { code: 'EIO' });
    done += written;
  }
}

/** Zeroes [offset, offset + length), clipped to the size of a regular file. */
async function writeZeroesKeepingSize(fd: number, offset: number, length: number): Promise<void> {
  const stats = await fstat(fd);
  const end = stats.isFile() ? Math.min(offset + length, stats.size) : offset + length;
  if (end > offset) await writeZeroes(fd, offset, end - offset);
}

function regularFileSize(fd: number, what: string): number {
  const stats = fs.fstatSync(fd);
  if (!stats.isFile()) throw notSupported(what);
  return stats.size;
}

/** Plain TypeScript stand-ins; exported so tests can exercise them directly. */
export const fallbackNative: NativeOps = {
  seekData(fd, offset) {
    checkRange(fd, offset, 0);
    return offset < regularFileSize(fd, 'lseek(SEEK_DATA)') ? offset : -1;
  },
  seekHole(fd, offset) {
    checkRange(fd, offset, 0);
    const size = regularFileSize(fd, 'lseek(SEEK_HOLE)');
    return offset < size ? size : -1;
  },
  async punchHole(fd, offset, length) {
    checkRange(fd, offset, length);
    await writeZeroesKeepingSize(fd, offset, length);
  },
  async zeroRange(fd, offset, length, keepSize = false) {
    checkRange(fd, offset, length);
    if (typeof keepSize !== 'boolean') {
      throw Object.assign(new TypeError('keepSize must be a boolean'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    if (keepSize) await writeZeroesKeepingSize(fd, offset, length);
    else await writeZeroes(fd, offset, length);
  },
  async allocate(fd, offset, length) {
    checkRange(fd, offset, length);
    const stats = await fstat(fd);
    if (length > 0 && stats.isFile() && offset + length > stats.size) await ftruncate(fd, offset + length);
  },
  blockDeviceSize(fd) {
    checkInteger(fd, 'fd', 0, MAX_FD);
    throw notSupported('ioctl(BLKGETSIZE64)');
  },
  logicalBlockSize(fd) {
    checkInteger(fd, 'fd', 0, MAX_FD);
    throw notSupported('ioctl(BLKSSZGET)');
  },
  async blockDeviceDiscard(fd, offset, length) {
    checkRange(fd, offset, length);
    throw notSupported('ioctl(BLKDISCARD)');
  },
  async blockDeviceZeroOut(fd, offset, length) {
    checkRange(fd, offset, length);
    await writeZeroes(fd, offset, length);
  },
  ofdSetLock() {
    throw notSupported('fcntl(F_OFD_SETLK)');
  },
  ofdTestLock() {
    throw notSupported('fcntl(F_OFD_GETLK)');
  },
  alignedBuffer(size, alignment) {
    checkInteger(size, 'size', 0, MAX_BUFFER_SIZE);
    checkInteger(alignment, 'alignment', 1, MAX_BUFFER_ALIGNMENT);
    if ((alignment & (alignment - 1)) !== 0) {
      throw Object.assign(new RangeError('alignment must be a power of two'), { code: 'ERR_OUT_OF_RANGE' });
    }
    return Buffer.alloc(size);
  },
  bufferAddressAlignment(buf) {
    if (!(buf instanceof Uint8Array)) {
      throw Object.assign(new TypeError('buf must be a Uint8Array'), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    return 1;
  },
  readNowait(fd, buf, offset) {
    checkNowaitArgs(fd, buf, offset);
    return NOWAIT_UNSUPPORTED;
  },
  writeNowait(fd, buf, offset) {
    checkNowaitArgs(fd, buf, offset);
    return NOWAIT_UNSUPPORTED;
  },
};

function checkNowaitArgs(fd: number, buf: Uint8Array, offset: number): void {
  checkInteger(fd, 'fd', 0, MAX_FD);
  if (!(buf instanceof Uint8Array)) {
    throw Object.assign(new TypeError('buf must be a Uint8Array'), { code: 'ERR_INVALID_ARG_TYPE' });
  }
  checkInteger(offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
}

// ---- addon ----------------------------------------------------------------

/** Added after the first release: an addon built before them still loads, and they fall back. */
const OPTIONAL_OPERATIONS: (keyof NativeOps)[] = ['readNowait', 'writeNowait'];
const OPERATIONS = (Object.keys(fallbackNative) as (keyof NativeOps)[]).filter((name) => !OPTIONAL_OPERATIONS.includes(name));

/** Runs `start` so that a synchronous throw (a bad argument) becomes a rejection too. */
async function settle(start: () => Promise<void>): Promise<void> {
  return start();
}

/** Wraps the raw addon so it behaves exactly like the fallback's signatures. */
function wrapAddon(addon: NativeOps): NativeOps {
  return {
    seekData: (fd, offset) => addon.seekData(fd, offset),
    seekHole: (fd, offset) => addon.seekHole(fd, offset),
    punchHole: (fd, offset, length) => settle(() => addon.punchHole(fd, offset, length)),
    zeroRange: (fd, offset, length, keepSize) => settle(() => addon.zeroRange(fd, offset, length, keepSize)),
    allocate: (fd, offset, length) => settle(() => addon.allocate(fd, offset, length)),
    blockDeviceSize: (fd) => addon.blockDeviceSize(fd),
    logicalBlockSize: (fd) => addon.logicalBlockSize(fd),
    blockDeviceDiscard: (fd, offset, length) => settle(() => addon.blockDeviceDiscard(fd, offset, length)),
    blockDeviceZeroOut: (fd, offset, length) => settle(() => addon.blockDeviceZeroOut(fd, offset, length)),
    ofdSetLock: (fd, start, length, type) => addon.ofdSetLock(fd, start, length, type),
    ofdTestLock: (fd, start, length, type) => addon.ofdTestLock(fd, start, length, type),
    alignedBuffer: (size, alignment) => addon.alignedBuffer(size, alignment),
    bufferAddressAlignment: (buf) => addon.bufferAddressAlignment(buf),
    // Called directly: they sit on the hot path of every cached read.
    readNowait: typeof addon.readNowait === 'function' ? addon.readNowait : fallbackNative.readNowait,
    writeNowait: typeof addon.writeNowait === 'function' ? addon.writeNowait : fallbackNative.writeNowait,
  };
}

/** Where node-gyp puts the addon, seen from src/native (sources) and dist/src/native (compiled). */
function addonCandidates(): string[] {
  return [
    path.resolve(__dirname, '..', '..', 'build', 'Release', ADDON_FILE),
    path.resolve(__dirname, '..', '..', '..', 'build', 'Release', ADDON_FILE),
  ];
}

function loadAddon(): { ops: NativeOps; raw: Record<string, unknown> } | { error: Error } {
  if (process.env.QBD_NATIVE === 'off') return { error: new Error('native addon disabled by QBD_NATIVE=off') };
  const file = addonCandidates().find((candidate) => fs.existsSync(candidate));
  if (file === undefined) return { error: new Error(`native addon ${ADDON_FILE} not built`) };
  try {
    const addonModule = { exports: {} as Record<string, unknown> };
    process.dlopen(addonModule, file);
    // A stale build from an older version may lack functions: use none of it then.
    const missing = OPERATIONS.filter((name) => typeof addonModule.exports[name] !== 'function');
    if (missing.length > 0) return { error: new Error(`native addon ${file} lacks ${missing.join(', ')}`) };
    return { ops: wrapAddon(addonModule.exports as unknown as NativeOps), raw: addonModule.exports };
  } catch (err) {
    return { error: err instanceof Error ? err : new Error(String(err)) };
  }
}

const loaded = loadAddon();

/** True when the addon is loaded; false means the fallback is in use. */
export const nativeAvailable: boolean = 'ops' in loaded;

/** Why the addon is not in use, for a log line at start-up. */
export const nativeLoadError: Error | undefined = 'error' in loaded ? loaded.error : undefined;

/** The implementation in use: the addon when loaded, else the fallback. */
export const native: NativeOps = 'ops' in loaded ? loaded.ops : fallbackNative;

export const {
  seekData,
  seekHole,
  punchHole,
  zeroRange,
  allocate,
  blockDeviceSize,
  logicalBlockSize,
  blockDeviceDiscard,
  blockDeviceZeroOut,
  ofdSetLock,
  ofdTestLock,
  alignedBuffer,
  bufferAddressAlignment,
  readNowait,
  writeNowait,
} = native;

/**
 * A function of the loaded addon that not every build has: the calls for
 * one feature (exports over FUSE or vhost-user, say) are looked up by the
 * module that wraps them, and undefined when the addon is off or older.
 */
export function optionalAddonFunction<F extends (...args: never[]) => unknown>(name: string): F | undefined {
  const fn = 'raw' in loaded ? loaded.raw[name] : undefined;
  return typeof fn === 'function' ? (fn as F) : undefined;
}

const addonDupFd = optionalAddonFunction<(fd: number) => number>('dupFd');

/** True when dupFd works (the addon is loaded and has it). */
export const dupFdAvailable: boolean = addonDupFd !== undefined;

/** A new close-on-exec descriptor for the same open file or socket (fcntl F_DUPFD_CLOEXEC). */
export function dupFd(fd: number): number {
  checkInteger(fd, 'fd', 0, MAX_FD);
  if (!addonDupFd) throw notSupported('fcntl(F_DUPFD_CLOEXEC)');
  return addonDupFd(fd);
}
