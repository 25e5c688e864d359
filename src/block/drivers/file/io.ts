/**
 * file / host_device, I/O half: positional reads and writes on the file
 * descriptor the GS half opened (fds are shared by all threads of the
 * process). Sparse files are first class: block status from
 * SEEK_DATA/SEEK_HOLE, zeroing and discard by hole punching, through the
 * native addon; without it everything is data and zeros are written.
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

async function readFull(node: IoNode<FileState>, offset: number, buf: Buffer): Promise<void> {
  let done = 0;
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
  let done = 0;
  while (done < buf.length) {
    done += await pwriteOnce(node.state.fd, buf.subarray(done), offset + done);
  }
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
    try {
      if (isBlockDevice) await native.blockDeviceDiscard(fd, offset, bytes);
      else await native.punchHole(fd, offset, bytes);
    } catch (err) {
      // Discard is a hint; a file system that cannot punch holes simply keeps the data.
      if (!isUnsupported(err)) throw ioError(err as NodeJS.ErrnoException, 'discard on', node);
    }
  },

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
