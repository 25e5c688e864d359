/**
 * file / host_device, GS half: opens the file descriptor (O_DIRECT with
 * cache.direct, read-only when asked or when auto-read-only meets a
 * read-only file), sizes it, and closes it after the I/O half is gone.
 */
import * as fs from 'node:fs';
import type { GsDriver, OpenContext } from '../../global-state/driver-gs';
import type { BlockNode } from '../../global-state/block-node';
import { QmpError } from '../../../qmp/errors';
import { strerror } from '../../../common/errno';
import { PERM_ALL } from '../../common/permissions';
import * as native from '../../../native/native';
import * as proto from '../../common/io-context-protocol';
import type { FileState } from './common';
import { applyImageLocks, type HeldLocks } from './image-locks';

/** The image locks each file node holds now (GS-only: the I/O half never locks). */
const heldLocks = new WeakMap<BlockNode, HeldLocks>();

function useLocking(option: unknown): boolean {
  if (option === 'off') return false;
  if (option === 'on' && !native.nativeAvailable) {
    throw QmpError.generic('locking=on needs OFD locks, which this build cannot take (the native addon is not built)');
  }
  return native.nativeAvailable;
}

/** QEMU counts a node's length in 512-byte sectors: a file's last partial sector reads as zeros. */
function sectorAligned(bytes: number): number {
  return Math.ceil(bytes / 512) * 512;
}

/** O_DIRECT buffer alignment; also the request alignment on regular files (QEMU probes; 4 KiB is always safe). */
const DIRECT_ALIGNMENT = 4096;

function openFd(filename: string, writable: boolean, direct: boolean): number {
  let flags = writable ? fs.constants.O_RDWR : fs.constants.O_RDONLY;
  if (direct) flags |= fs.constants.O_DIRECT;
  return fs.openSync(filename, flags);
}

function openWithFallback(ctx: OpenContext, filename: string, autoReadOnly: boolean): { fd: number; readOnly: boolean } {
  try {
    return { fd: openFd(filename, !ctx.readOnly, ctx.cacheDirect), readOnly: ctx.readOnly };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!ctx.readOnly && autoReadOnly && (code === 'EACCES' || code === 'EROFS' || code === 'EPERM')) {
      try {
        return { fd: openFd(filename, false, ctx.cacheDirect), readOnly: true };
      } catch (err2) {
        throw QmpError.generic(`Could not open '${filename}': ${strerror((err2 as NodeJS.ErrnoException).code)}`);
      }
    }
    throw QmpError.generic(`Could not open '${filename}': ${strerror(code)}`);
  }
}

function fileDriver(name: 'file' | 'host_device'): GsDriver<FileState> {
  return {
    descriptor: { name, kind: 'protocol' },
    strongOptions: ['filename'],
    hasDriverInfo: true,

    async open(ctx, options) {
      const filename = String(options.filename);
      const aio = options.aio;
      if (aio === 'native' && !ctx.cacheDirect) {
        throw QmpError.generic('aio=native was specified, but it requires cache.direct=on, which was not specified.');
      }
      const { fd, readOnly } = openWithFallback(ctx, filename, options['auto-read-only'] === true);
      try {
        const st = fs.fstatSync(fd);
        const isBlockDevice = st.isBlockDevice();
        if (name === 'host_device' && !isBlockDevice && !st.isCharacterDevice()) {
          throw QmpError.generic(`'host_device' driver requires '${filename}' to be either a character or block device`);
        }
        if (st.isDirectory()) throw QmpError.generic(`'${name}' driver requires '${filename}' to be a regular file`);
        const length = isBlockDevice && native.nativeAvailable ? native.blockDeviceSize(fd) : sectorAligned(st.size);
        let requestAlignment = 1;
        if (ctx.cacheDirect) {
          requestAlignment = isBlockDevice && native.nativeAvailable ? native.logicalBlockSize(fd) : DIRECT_ALIGNMENT;
        }
        return {
          state: { fd, filename, isBlockDevice, direct: ctx.cacheDirect, bufferAlignment: DIRECT_ALIGNMENT, locking: useLocking(options.locking) },
          length,
          requestAlignment,
          readOnly,
        };
      } catch (err) {
        fs.closeSync(fd);
        throw err;
      }
    },

    async reopenWritable(node: BlockNode, writable: boolean) {
      const st = node.state as FileState;
      let fd: number;
      try {
        fd = openFd(st.filename, writable, st.direct);
      } catch (err) {
        throw QmpError.generic(`Could not reopen file: ${strerror((err as NodeJS.ErrnoException).code)}`);
      }
      // OFD locks belong to the open file description: move them to the new one.
      const held = heldLocks.get(node);
      if (st.locking && held) {
        applyImageLocks(st.fd, st.filename, held, 0, PERM_ALL);
        try {
          heldLocks.set(node, applyImageLocks(fd, st.filename, { perm: 0, unshared: 0 }, held.perm, ~held.unshared & PERM_ALL));
        } catch (err) {
          applyImageLocks(st.fd, st.filename, { perm: 0, unshared: 0 }, held.perm, ~held.unshared & PERM_ALL);
          fs.closeSync(fd);
          throw err;
        }
      }
      const old = st.fd;
      node.state = { ...st, fd };
      await node.ctx.channel.request(proto.replaceState, { nodeName: node.name, state: node.state });
      fs.closeSync(old);
    },

    close(node: BlockNode) {
      fs.closeSync((node.state as FileState).fd);
    },

    childPerms: () => ({ perm: 0, shared: PERM_ALL }),

    setPerms(node, perm, shared) {
      const st = node.state as FileState;
      if (!st.locking) return;
      // force-share (read-only by construction) denies nothing to others.
      const effectiveShared = node.common.forceShare ? PERM_ALL : shared;
      heldLocks.set(node, applyImageLocks(st.fd, st.filename, heldLocks.get(node) ?? { perm: 0, unshared: 0 }, perm, effectiveShared));
    },

    plainFilename: (node) => (node.state as FileState).filename,

    currentLength(node) {
      const st = fs.fstatSync((node.state as FileState).fd);
      return st.isBlockDevice() ? undefined : sectorAligned(st.size);
    },

    create: name === 'file' ? createFile : undefined,

    allocatedSize(node) {
      const st = fs.fstatSync((node.state as FileState).fd);
      return st.isBlockDevice() ? 0 : st.blocks * 512;
    },
  };
}

/**
 * blockdev-create for `file`: creates (or empties) the file and gives it
 * `size` bytes, allocated up front with preallocation falloc or full.
 */
async function createFile(options: Record<string, unknown>): Promise<void> {
  const filename = String(options.filename);
  const size = Number(options.size);
  const prealloc = String(options.preallocation ?? 'off');
  if (prealloc !== 'off' && prealloc !== 'falloc' && prealloc !== 'full') {
    throw QmpError.generic(`Unsupported preallocation mode: ${prealloc}`);
  }
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(filename, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  } catch (err) {
    throw QmpError.generic(`Could not create '${filename}': ${strerror((err as NodeJS.ErrnoException).code)}`);
  }
  try {
    await fh.truncate(0);
    if (prealloc === 'falloc' && size > 0) {
      try {
        await native.allocate(fh.fd, 0, size);
      } catch (err) {
        throw QmpError.generic(`Could not preallocate data for the new file: ${strerror((err as NodeJS.ErrnoException).code)}`);
      }
    } else if (prealloc === 'full') {
      const chunk = Buffer.alloc(Math.min(size, 1 << 20));
      for (let done = 0; done < size; done += chunk.length) {
        await fh.write(chunk, 0, Math.min(chunk.length, size - done), done);
      }
    }
    await fh.truncate(size);
    await fh.sync();
  } catch (err) {
    if (err instanceof QmpError) throw err;
    throw QmpError.generic(`Could not resize file: ${strerror((err as NodeJS.ErrnoException).code)}`);
  } finally {
    await fh.close();
  }
}

export const fileGs = fileDriver('file');
export const hostDeviceGs = fileDriver('host_device');
