import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  fallbackNative,
  isNotSupportedError,
  native,
  nativeAvailable,
  nativeLoadError,
  NOWAIT_UNSUPPORTED,
  NOWAIT_WOULD_BLOCK,
  type NativeOps,
} from '../../src/native/native';

const KiB = 1024;
const MiB = 1024 * KiB;
const inCI = Boolean(process.env.CI);

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-native-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let fileCounter = 0;
/** A fresh file of `size` bytes (a hole), open read-write; the caller closes it. */
function makeFile(size: number): { file: string; fd: number } {
  const file = path.join(dir, `image-${fileCounter++}.raw`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return { file, fd: fs.openSync(file, 'r+') };
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  expect(fs.readSync(fd, buf, 0, length, offset)).toBe(length);
  return buf;
}

function isAllZero(buf: Buffer): boolean {
  return buf.every((byte) => byte === 0);
}

/** Whether an external tool runs; in CI a missing tool is a failure, not a skip. */
function toolAvailable(command: string, args: string[]): boolean {
  const found = spawnSync(command, args, { stdio: 'ignore', timeout: 10_000 }).status === 0;
  if (!found && inCI) throw new Error(`${command} is required in CI but is not installed`);
  return found;
}

const implementations: [string, NativeOps, boolean][] = [
  ['the addon', native, nativeAvailable],
  ['the fallback', fallbackNative, true],
];

describe('loading', () => {
  it('builds and loads the addon in CI', () => {
    if (inCI) expect(nativeAvailable, nativeLoadError?.message).toBe(true);
    expect(native === fallbackNative).toBe(!nativeAvailable);
    expect(nativeLoadError === undefined).toBe(nativeAvailable);
  });

  it('uses the fallback when QBD_NATIVE=off', async () => {
    vi.resetModules();
    process.env.QBD_NATIVE = 'off';
    try {
      const fresh = await import('../../src/native/native');
      expect(fresh.nativeAvailable).toBe(false);
      expect(fresh.native).toBe(fresh.fallbackNative);
      expect(fresh.nativeLoadError?.message).toMatch(/QBD_NATIVE=off/);
      expect(fresh.readNowait(0, Buffer.alloc(1), 0)).toBe(fresh.NOWAIT_UNSUPPORTED);
      expect(fresh.writeNowait(0, Buffer.alloc(1), 0)).toBe(fresh.NOWAIT_UNSUPPORTED);
    } finally {
      delete process.env.QBD_NATIVE;
      vi.resetModules();
    }
  });
});

describe.each(implementations)('with %s', (_name, ops, available) => {
  describe.skipIf(!available)('behaviour shared by both implementations', () => {
    it('reports a region that covers the written data of a sparse file', () => {
      const { fd } = makeFile(4 * MiB);
      try {
        fs.writeSync(fd, Buffer.alloc(64 * KiB, 0xab), 0, 64 * KiB, MiB);
        const data = ops.seekData(fd, 0);
        expect(data).toBeGreaterThanOrEqual(0);
        expect(data).toBeLessThanOrEqual(MiB);
        expect(ops.seekHole(fd, data)).toBeGreaterThanOrEqual(MiB + 64 * KiB);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('answers -1 when seeking at or past the end of file', () => {
      const { fd } = makeFile(MiB);
      try {
        fs.writeSync(fd, Buffer.alloc(4 * KiB, 1), 0, 4 * KiB, 0);
        expect(ops.seekData(fd, MiB)).toBe(-1);
        expect(ops.seekHole(fd, MiB)).toBe(-1);
        expect(ops.seekData(fd, 5 * MiB)).toBe(-1);
        const hole = ops.seekHole(fd, 0);
        expect(hole).toBeGreaterThanOrEqual(4 * KiB);
        expect(hole).toBeLessThanOrEqual(MiB);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('makes a punched range read back as zero and keeps the file size', async () => {
      const { fd } = makeFile(0);
      try {
        fs.writeSync(fd, Buffer.alloc(MiB, 0xaa), 0, MiB, 0);
        await ops.punchHole(fd, 256 * KiB, 256 * KiB);
        expect(isAllZero(readAt(fd, 256 * KiB, 256 * KiB))).toBe(true);
        expect(readAt(fd, 256 * KiB - 1, 1)[0]).toBe(0xaa);
        expect(readAt(fd, 512 * KiB, 1)[0]).toBe(0xaa);
        // Past the end nothing happens: the size is kept.
        await ops.punchHole(fd, MiB - 4 * KiB, 64 * KiB);
        expect(fs.fstatSync(fd).size).toBe(MiB);
        expect(isAllZero(readAt(fd, MiB - 4 * KiB, 4 * KiB))).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('zeroes a range larger than one write chunk at an odd offset', async () => {
      const { fd } = makeFile(0);
      const length = 3 * MiB + 5;
      try {
        fs.writeSync(fd, Buffer.alloc(4 * MiB, 0x5a), 0, 4 * MiB, 0);
        await ops.zeroRange(fd, 7, length);
        expect(readAt(fd, 6, 1)[0]).toBe(0x5a);
        expect(isAllZero(readAt(fd, 7, length))).toBe(true);
        expect(readAt(fd, 7 + length, 1)[0]).toBe(0x5a);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('extends the file with zeroRange unless keepSize is set', async () => {
      const { fd } = makeFile(64 * KiB);
      try {
        await ops.zeroRange(fd, 60 * KiB, 8 * KiB, true);
        expect(fs.fstatSync(fd).size).toBe(64 * KiB);
        await ops.zeroRange(fd, 60 * KiB, 8 * KiB);
        expect(fs.fstatSync(fd).size).toBe(68 * KiB);
        expect(isAllZero(readAt(fd, 60 * KiB, 8 * KiB))).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('extends a short file with allocate and leaves a long one its size', async () => {
      const { fd } = makeFile(4 * KiB);
      try {
        await ops.allocate(fd, 0, 64 * KiB);
        expect(fs.fstatSync(fd).size).toBe(64 * KiB);
        await ops.allocate(fd, 0, 4 * KiB);
        expect(fs.fstatSync(fd).size).toBe(64 * KiB);
        expect(isAllZero(readAt(fd, 0, 64 * KiB))).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('treats an empty range as a no-op', async () => {
      const { fd } = makeFile(4 * KiB);
      try {
        fs.writeSync(fd, Buffer.alloc(4 * KiB, 7), 0, 4 * KiB, 0);
        await ops.punchHole(fd, 0, 0);
        await ops.zeroRange(fd, 0, 0);
        await ops.allocate(fd, 8 * KiB, 0);
        expect(fs.fstatSync(fd).size).toBe(4 * KiB);
        expect(readAt(fd, 0, 4 * KiB).every((byte) => byte === 7)).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('reports a closed descriptor as EBADF', async () => {
      const { fd } = makeFile(4 * KiB);
      fs.closeSync(fd);
      expect(() => ops.seekData(fd, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
      await expect(ops.punchHole(fd, 0, 4 * KiB)).rejects.toMatchObject({ code: 'EBADF' });
    });

    it('refuses bad arguments with the codes node uses', async () => {
      const { fd } = makeFile(4 * KiB);
      try {
        expect(() => ops.seekData(fd, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
        expect(() => ops.seekHole(fd, 0.5)).toThrow(RangeError);
        expect(() => ops.seekData('1' as unknown as number, 0)).toThrow(TypeError);
        // A bad argument to an asynchronous call rejects instead of throwing.
        const punched = ops.punchHole(fd, 0, -4);
        await expect(punched).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
        await expect(ops.zeroRange(fd, 0, 1, 'yes' as unknown as boolean)).rejects.toThrow(TypeError);
        expect(() => ops.alignedBuffer(4096, 3)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
        expect(() => ops.bufferAddressAlignment([] as unknown as Uint8Array)).toThrow(TypeError);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('answers a nowait read or write with a byte count or one of the two NOWAIT results', () => {
      const { fd } = makeFile(0);
      try {
        fs.writeSync(fd, Buffer.alloc(64 * KiB, 0x3c), 0, 64 * KiB, 0);
        const into = Buffer.alloc(64 * KiB);
        const read = ops.readNowait(fd, into, 0);
        expect([64 * KiB, NOWAIT_WOULD_BLOCK, NOWAIT_UNSUPPORTED].includes(read) || (read > 0 && read < 64 * KiB)).toBe(true);
        if (read > 0) expect(into.subarray(0, read).every((byte) => byte === 0x3c)).toBe(true);
        const data = Buffer.alloc(4 * KiB, 0x7e);
        const written = ops.writeNowait(fd, data, 8 * KiB);
        expect(written === NOWAIT_WOULD_BLOCK || written === NOWAIT_UNSUPPORTED || (written > 0 && written <= 4 * KiB)).toBe(true);
        if (written > 0) expect(readAt(fd, 8 * KiB, written).every((byte) => byte === 0x7e)).toBe(true);
        else expect(readAt(fd, 8 * KiB, 4 * KiB).every((byte) => byte === 0x3c)).toBe(true);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('refuses bad arguments to the nowait calls', () => {
      const { fd } = makeFile(4 * KiB);
      try {
        const buf = Buffer.alloc(512);
        expect(() => ops.readNowait(fd, buf, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
        expect(() => ops.writeNowait(fd, buf, 0.5)).toThrow(RangeError);
        expect(() => ops.readNowait(fd, 'data' as unknown as Uint8Array, 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
        expect(() => ops.writeNowait(-1, buf, 0)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      } finally {
        fs.closeSync(fd);
      }
    });

    it('hands out zero-filled buffers of the asked size', () => {
      const buf = ops.alignedBuffer(8 * KiB, 4 * KiB);
      expect(Buffer.isBuffer(buf)).toBe(true);
      expect(buf.length).toBe(8 * KiB);
      expect(isAllZero(buf)).toBe(true);
      buf.fill(0xff);
      expect(buf[8 * KiB - 1]).toBe(0xff);
      expect(ops.alignedBuffer(0, 512).length).toBe(0);
    });
  });
});

describe.skipIf(!nativeAvailable)('the addon', () => {
  describe('nowait reads and writes', () => {
    it('reads data the page cache holds on the calling thread', () => {
      const { fd } = makeFile(0);
      try {
        const data = Buffer.alloc(256 * KiB);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
        fs.writeSync(fd, data, 0, data.length, 0);
        // Just written through the page cache, and read once more to be sure it is there.
        readAt(fd, 0, data.length);
        const into = Buffer.alloc(64 * KiB);
        expect(native.readNowait(fd, into, 64 * KiB)).toBe(64 * KiB);
        expect(into.equals(data.subarray(64 * KiB, 128 * KiB))).toBe(true);
        // A view at an offset inside a larger buffer lands where the view is.
        const whole = Buffer.alloc(8 * KiB, 0xee);
        expect(native.readNowait(fd, whole.subarray(KiB, 2 * KiB), 3)).toBe(KiB);
        expect(whole.subarray(KiB, 2 * KiB).equals(data.subarray(3, 3 + KiB))).toBe(true);
        expect(whole[KiB - 1]).toBe(0xee);
        expect(whole[2 * KiB]).toBe(0xee);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('answers 0 at the end of the file and the bytes left before it', () => {
      const { fd } = makeFile(0);
      try {
        fs.writeSync(fd, Buffer.alloc(5000, 9), 0, 5000, 0);
        readAt(fd, 0, 5000);
        const into = Buffer.alloc(8 * KiB);
        expect(native.readNowait(fd, into, 4096)).toBe(904);
        expect(native.readNowait(fd, into, 5000)).toBe(0);
        expect(native.readNowait(fd, into, 1 << 30)).toBe(0);
        expect(native.readNowait(fd, Buffer.alloc(0), 0)).toBe(0);
        expect(native.writeNowait(fd, Buffer.alloc(0), 0)).toBe(0);
      } finally {
        fs.closeSync(fd);
      }
    });

    it('throws other failures with their errno name', () => {
      const { fd } = makeFile(4 * KiB);
      fs.closeSync(fd);
      expect(() => native.readNowait(fd, Buffer.alloc(512), 0)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'preadv2' }));
      expect(() => native.writeNowait(fd, Buffer.alloc(512), 0)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'pwritev2' }));
    });

    it('never writes through a read-only descriptor', () => {
      const { file, fd } = makeFile(4 * KiB);
      fs.closeSync(fd);
      const ro = fs.openSync(file, 'r');
      try {
        expect(() => native.writeNowait(ro, Buffer.alloc(512, 1), 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
        expect(isAllZero(readAt(ro, 0, 4 * KiB))).toBe(true);
      } finally {
        fs.closeSync(ro);
      }
    });
  });

  it('finds the exact data and hole boundaries of a sparse file', () => {
    const { fd } = makeFile(4 * MiB);
    try {
      fs.writeSync(fd, Buffer.alloc(64 * KiB, 0xab), 0, 64 * KiB, MiB);
      expect(native.seekData(fd, 0)).toBe(MiB);
      expect(native.seekHole(fd, 0)).toBe(0);
      expect(native.seekHole(fd, MiB)).toBe(MiB + 64 * KiB);
      expect(native.seekData(fd, MiB + 32 * KiB)).toBe(MiB + 32 * KiB);
      expect(native.seekData(fd, MiB + 64 * KiB)).toBe(-1);
      expect(native.seekHole(fd, 2 * MiB)).toBe(2 * MiB);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('punches a hole that seekHole finds and that frees blocks', async () => {
    const { fd } = makeFile(0);
    try {
      fs.writeSync(fd, Buffer.alloc(MiB, 0xaa), 0, MiB, 0);
      fs.fsyncSync(fd);
      const blocksBefore = fs.fstatSync(fd).blocks;
      expect(native.seekHole(fd, 0)).toBe(MiB);
      await native.punchHole(fd, 256 * KiB, 256 * KiB);
      expect(native.seekHole(fd, 0)).toBe(256 * KiB);
      expect(native.seekData(fd, 256 * KiB)).toBe(512 * KiB);
      expect(fs.fstatSync(fd).blocks).toBeLessThan(blocksBefore);
      expect(fs.fstatSync(fd).size).toBe(MiB);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('allocates blocks for a range with allocate', async () => {
    const { fd } = makeFile(0);
    try {
      await native.allocate(fd, 0, MiB);
      const stats = fs.fstatSync(fd);
      expect(stats.size).toBe(MiB);
      expect(stats.blocks * 512).toBeGreaterThanOrEqual(MiB);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('names the errno of a failed ioctl and of a failed fallocate', async () => {
    const { fd } = makeFile(4 * KiB);
    try {
      expect(() => native.blockDeviceSize(fd)).toThrow(
        expect.objectContaining({ code: 'ENOTTY', errno: -os.constants.errno.ENOTTY, syscall: 'ioctl(BLKGETSIZE64)' }),
      );
      expect(() => native.logicalBlockSize(fd)).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
      await expect(native.blockDeviceDiscard(fd, 0, 512)).rejects.toMatchObject({ code: 'ENOTTY' });
      await expect(native.punchHole(fd, Number.MAX_SAFE_INTEGER, 1)).rejects.toMatchObject({
        syscall: 'fallocate',
        message: expect.stringMatching(/^E[A-Z]+: .*, fallocate$/),
      });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reports the alignment of a buffer address, capped at 4096', () => {
    const buf = native.alignedBuffer(16 * KiB, 4 * KiB);
    expect(native.bufferAddressAlignment(buf)).toBe(4096);
    expect(native.bufferAddressAlignment(buf.subarray(512))).toBe(512);
    expect(native.bufferAddressAlignment(buf.subarray(4096 + 8))).toBe(8);
    expect(native.bufferAddressAlignment(buf.subarray(1))).toBe(1);
    expect(native.bufferAddressAlignment(native.alignedBuffer(64, 2))).toBeGreaterThanOrEqual(2);
  });

  it('gives buffers that O_DIRECT accepts where an unaligned one fails', () => {
    const { file, fd: plainFd } = makeFile(64 * KiB);
    fs.closeSync(plainFd);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    try {
      const out = native.alignedBuffer(4 * KiB, 4 * KiB).fill(0x42);
      expect(fs.writeSync(fd, out, 0, out.length, 8 * KiB)).toBe(4 * KiB);
      const back = native.alignedBuffer(4 * KiB + 1, 4 * KiB);
      expect(fs.readSync(fd, back, 0, 4 * KiB, 8 * KiB)).toBe(4 * KiB);
      expect(back.subarray(0, 4 * KiB).every((byte) => byte === 0x42)).toBe(true);
      const unaligned = back.subarray(1);
      expect(native.bufferAddressAlignment(unaligned)).toBe(1);
      expect(() => fs.readSync(fd, unaligned, 0, 4 * KiB, 8 * KiB)).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
    } finally {
      fs.closeSync(fd);
    }
  });

  it('loads and works in a worker thread', async () => {
    const addonPath = path.resolve(__dirname, '..', '..', 'build', 'Release', 'qbd_native.node');
    const { file, fd } = makeFile(64 * KiB);
    fs.closeSync(fd);
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const fs = require('node:fs');
       const addon = { exports: {} };
       process.dlopen(addon, workerData.addonPath);
       const fd = fs.openSync(workerData.file, 'r+');
       fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 32768);
       addon.exports.punchHole(fd, 0, 4096).then(() => {
         const data = addon.exports.seekData(fd, 0);
         const alignment = addon.exports.bufferAddressAlignment(addon.exports.alignedBuffer(4096, 4096));
         fs.closeSync(fd);
         parentPort.postMessage({ data, alignment });
       });`,
      { eval: true, workerData: { addonPath, file } },
    );
    const reply = await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(reply).toEqual({ data: 32768, alignment: 4096 });
  });

  describe('OFD locks', () => {
    it('lets shared locks coexist and reports a writer as a conflict', () => {
      const { file, fd: first } = makeFile(4 * KiB);
      const second = fs.openSync(file, 'r+');
      try {
        native.ofdSetLock(first, 100, 1, 'read');
        native.ofdSetLock(second, 100, 1, 'read');
        expect(native.ofdTestLock(second, 100, 1, 'read')).toEqual({ conflict: false });
        // The other description's shared lock blocks an exclusive one; OFD locks name no pid.
        expect(native.ofdTestLock(second, 100, 1, 'write')).toEqual({ conflict: true });
        expect(() => native.ofdSetLock(second, 100, 1, 'write')).toThrow(
          expect.objectContaining({ code: expect.stringMatching(/^(EAGAIN|EACCES)$/) }),
        );
        native.ofdSetLock(first, 100, 1, 'unlock');
        // Only second's own lock is left, and a description never conflicts with itself.
        expect(native.ofdTestLock(second, 100, 1, 'write')).toEqual({ conflict: false });
        native.ofdSetLock(second, 100, 1, 'write');
        expect(native.ofdTestLock(first, 0, 0, 'read')).toEqual({ conflict: true });
      } finally {
        fs.closeSync(second);
        fs.closeSync(first);
      }
    });

    it('keeps a lock when another descriptor of the same file is closed', () => {
      const { file, fd: holder } = makeFile(4 * KiB);
      const prober = fs.openSync(file, 'r+');
      try {
        native.ofdSetLock(holder, 201, 1, 'read');
        fs.closeSync(fs.openSync(file, 'r'));
        expect(native.ofdTestLock(prober, 201, 1, 'write').conflict).toBe(true);
        fs.closeSync(holder);
        expect(native.ofdTestLock(prober, 201, 1, 'write').conflict).toBe(false);
      } finally {
        fs.closeSync(prober);
      }
    });
  });

  describe('alongside QEMU image locking', () => {
    const haveQemuIo = toolAvailable('qemu-io', ['--version']);

    it.skipIf(!haveQemuIo)('makes qemu-io fail to get the write lock until the locks are released', () => {
      const { file, fd } = makeFile(MiB);
      const qemuWrite = () =>
        spawnSync('qemu-io', ['-f', 'raw', '-c', 'write 0 512', file], { encoding: 'utf8', timeout: 20_000 });
      try {
        // What a QEMU writer that shares nothing holds: consistent-read, write, and "no other writer".
        for (const byte of [100, 101, 201]) native.ofdSetLock(fd, byte, 1, 'read');
        const refused = qemuWrite();
        expect(refused.status).not.toBe(0);
        expect(refused.stderr).toContain('Failed to get "write" lock');

        for (const byte of [100, 101, 201]) native.ofdSetLock(fd, byte, 1, 'unlock');
        const allowed = qemuWrite();
        expect(allowed.stderr).toBe('');
        expect(allowed.stdout).toContain('wrote 512/512 bytes at offset 0');
        expect(allowed.status).toBe(0);
      } finally {
        fs.closeSync(fd);
      }
    });

    it.skipIf(!haveQemuIo)("sees the locks of a running qemu-io", async () => {
      const { file, fd } = makeFile(MiB);
      let qemu: ChildProcess | undefined;
      try {
        qemu = spawn('qemu-io', ['-f', 'raw', '-c', 'sleep 20000', file], { stdio: 'ignore' });
        const deadline = Date.now() + 10_000;
        while (!native.ofdTestLock(fd, 101, 1, 'write').conflict) {
          expect(qemu.exitCode, 'qemu-io exited early').toBeNull();
          expect(Date.now(), 'qemu-io never took its locks').toBeLessThan(deadline);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        // qemu-io holds consistent-read (100) and write (101) but shares write, so 201 stays free.
        expect(native.ofdTestLock(fd, 100, 1, 'write')).toEqual({ conflict: true });
        expect(native.ofdTestLock(fd, 101, 1, 'write')).toEqual({ conflict: true });
        expect(native.ofdTestLock(fd, 100, 2, 'read')).toEqual({ conflict: false });
        expect(native.ofdTestLock(fd, 201, 1, 'write')).toEqual({ conflict: false });
        expect(() => native.ofdSetLock(fd, 101, 1, 'write')).toThrow(
          expect.objectContaining({ code: expect.stringMatching(/^(EAGAIN|EACCES)$/) }),
        );
      } finally {
        if (qemu !== undefined && qemu.exitCode === null) {
          const exited = new Promise((resolve) => qemu?.once('exit', resolve));
          qemu.kill('SIGKILL');
          await exited;
        }
        fs.closeSync(fd);
      }
    });
  });

  describe('block devices', () => {
    const canUseLoop = process.getuid?.() === 0 && fs.existsSync('/dev/loop-control');
    const haveLosetup = canUseLoop && toolAvailable('losetup', ['--version']);
    let loopDevice = '';
    let backing = '';

    beforeAll(() => {
      if (!haveLosetup) return;
      backing = path.join(dir, 'loop-backing.raw');
      fs.writeFileSync(backing, Buffer.alloc(8 * MiB, 0x11));
      const attached = spawnSync('losetup', ['--find', '--show', backing], { encoding: 'utf8', timeout: 10_000 });
      expect(attached.status, attached.stderr).toBe(0);
      loopDevice = attached.stdout.trim();
    });

    afterAll(() => {
      if (loopDevice !== '') spawnSync('losetup', ['--detach', loopDevice], { timeout: 10_000 });
    });

    it.skipIf(!haveLosetup)('reads the size and sector size of a loop device', () => {
      const fd = fs.openSync(loopDevice, 'r');
      try {
        expect(native.blockDeviceSize(fd)).toBe(8 * MiB);
        expect(native.logicalBlockSize(fd)).toBe(512);
      } finally {
        fs.closeSync(fd);
      }
    });

    it.skipIf(!haveLosetup)('zeroes out and discards ranges of a loop device', async () => {
      const fd = fs.openSync(loopDevice, 'r+');
      try {
        await native.blockDeviceZeroOut(fd, MiB, 64 * KiB);
        expect(isAllZero(readAt(fd, MiB, 64 * KiB))).toBe(true);
        expect(readAt(fd, MiB - 1, 1)[0]).toBe(0x11);
        expect(readAt(fd, MiB + 64 * KiB, 1)[0]).toBe(0x11);
        await native.blockDeviceDiscard(fd, 2 * MiB, MiB);
        expect(isAllZero(readAt(fd, 2 * MiB, MiB))).toBe(true);
        await expect(native.blockDeviceDiscard(fd, 0, 100)).rejects.toMatchObject({ code: 'EINVAL' });
      } finally {
        fs.closeSync(fd);
      }
    });
  });
});

describe('the fallback', () => {
  it('refuses locks with ENOTSUP so locking=auto can turn itself off', () => {
    const { fd } = makeFile(4 * KiB);
    try {
      let caught: unknown;
      try {
        fallbackNative.ofdSetLock(fd, 100, 1, 'read');
      } catch (err) {
        caught = err;
      }
      expect(caught).toMatchObject({ code: 'ENOTSUP' });
      expect(isNotSupportedError(caught)).toBe(true);
      expect(() => fallbackNative.ofdTestLock(fd, 100, 1, 'write')).toThrow(
        expect.objectContaining({ code: 'ENOTSUP' }),
      );
    } finally {
      fs.closeSync(fd);
    }
  });

  it('sees no holes: data runs to the end of file', () => {
    const { fd } = makeFile(4 * MiB);
    try {
      expect(fallbackNative.seekData(fd, 123)).toBe(123);
      expect(fallbackNative.seekHole(fd, 123)).toBe(4 * MiB);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('refuses what it cannot emulate with ENOTSUP', async () => {
    const fd = fs.openSync('/dev/null', 'r+');
    try {
      expect(() => fallbackNative.seekData(fd, 0)).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      expect(() => fallbackNative.blockDeviceSize(fd)).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      expect(() => fallbackNative.logicalBlockSize(fd)).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      await expect(fallbackNative.blockDeviceDiscard(fd, 0, 512)).rejects.toMatchObject({ code: 'ENOTSUP' });
    } finally {
      fs.closeSync(fd);
    }
  });

  it('zeroes a device range by writing', async () => {
    const { fd } = makeFile(0);
    try {
      fs.writeSync(fd, Buffer.alloc(2 * MiB, 3), 0, 2 * MiB, 0);
      await fallbackNative.blockDeviceZeroOut(fd, 512, MiB + 512);
      expect(isAllZero(readAt(fd, 512, MiB + 512))).toBe(true);
      expect(readAt(fd, MiB + 1024, 1)[0]).toBe(3);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('answers every nowait read and write with NOWAIT_UNSUPPORTED, touching nothing', () => {
    const { fd } = makeFile(0);
    try {
      fs.writeSync(fd, Buffer.alloc(4 * KiB, 5), 0, 4 * KiB, 0);
      const into = Buffer.alloc(4 * KiB);
      expect(fallbackNative.readNowait(fd, into, 0)).toBe(NOWAIT_UNSUPPORTED);
      expect(isAllZero(into)).toBe(true);
      expect(fallbackNative.writeNowait(fd, Buffer.alloc(4 * KiB, 6), 0)).toBe(NOWAIT_UNSUPPORTED);
      expect(readAt(fd, 0, 4 * KiB).every((byte) => byte === 5)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('claims no alignment for any buffer', () => {
    expect(fallbackNative.bufferAddressAlignment(fallbackNative.alignedBuffer(4096, 4096))).toBe(1);
  });

  it('counts both spellings of "not supported" as such', () => {
    expect(isNotSupportedError({ code: 'EOPNOTSUPP' })).toBe(true);
    expect(isNotSupportedError({ code: 'ENOTSUP' })).toBe(true);
    expect(isNotSupportedError({ code: 'EINVAL' })).toBe(false);
    expect(isNotSupportedError(null)).toBe(false);
  });
});
