/**
 * The file driver's page-cache fast path (nowait reads and writes on the
 * calling thread) and its fallback to the thread pool: every outcome of the
 * nowait calls (all, part, would block, unsupported, failure) must give the
 * same data as the thread-pool path alone.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import * as native from '../../src/native/native';
import { fileIo } from '../../src/block/drivers/file/io';
import type { FileState } from '../../src/block/drivers/file/common';
import { IoNode } from '../../src/block/io/io-node';
import type { IoNodeDescriptor } from '../../src/block/common/node-descriptor';

vi.mock('../../src/native/native', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/native/native')>();
  return { ...real, readNowait: vi.fn(real.readNowait), writeNowait: vi.fn(real.writeNowait) };
});

const KiB = 1024;
const MiB = 1024 * KiB;
const readNowait = vi.mocked(native.readNowait);
const writeNowait = vi.mocked(native.writeNowait);
/** The implementation in use, unmocked: only the module's named exports are replaced. */
const realNative = native.native;

let dir: string;
const fds: number[] = [];
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-file-fast-path-'));
});
afterEach(() => {
  readNowait.mockReset().mockImplementation(realNative.readNowait);
  writeNowait.mockReset().mockImplementation(realNative.writeNowait);
});
afterAll(() => {
  for (const fd of fds) fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

let counter = 0;
/** A file node on a new file holding `content`, with a state of its own (as after an open). */
function fileNode(content: Buffer, direct = false): { node: IoNode<FileState>; fd: number } {
  const file = path.join(dir, `f${counter++}.raw`);
  fs.writeFileSync(file, content);
  const fd = fs.openSync(file, 'r+');
  fds.push(fd);
  const state: FileState = { fd, filename: file, isBlockDevice: false, direct, bufferAlignment: 1, locking: false };
  const desc: IoNodeDescriptor = {
    nodeName: `file${counter}`,
    driver: 'file',
    state,
    children: [],
    length: content.length,
    readOnly: false,
    requestAlignment: 1,
    maxTransfer: 0,
    detectZeroes: 'off',
    discard: 'ignore',
  };
  return { node: new IoNode<FileState>(desc, fileIo), fd };
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function onDisk(fd: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  fs.readSync(fd, b, 0, length, offset);
  return b;
}

describe('file driver reads', () => {
  it.skipIf(!native.nativeAvailable)('serves cached data from the page cache on the calling thread', async () => {
    const content = pattern(256 * KiB, 1);
    const { node } = fileNode(content);
    const buf = Buffer.alloc(64 * KiB);
    await fileIo.read(node, 64 * KiB, buf);
    expect(buf.equals(content.subarray(64 * KiB, 128 * KiB))).toBe(true);
    expect(readNowait).toHaveBeenCalledTimes(1);
    expect(readNowait.mock.results[0]!.value).toBe(64 * KiB);
  });

  it.each([
    ['would block', () => native.NOWAIT_WOULD_BLOCK],
    ['is not supported', () => native.NOWAIT_UNSUPPORTED],
    ['fails', () => {
      throw Object.assign(new Error('EIO: i/o error, preadv2'), { code: 'EIO' });
    }],
  ])('reads through the thread pool when the nowait read %s', async (_what, outcome) => {
    readNowait.mockImplementation(outcome);
    const content = pattern(128 * KiB, 2);
    const { node } = fileNode(content);
    const buf = Buffer.alloc(100 * KiB);
    await fileIo.read(node, 7, buf);
    expect(buf.equals(content.subarray(7, 7 + 100 * KiB))).toBe(true);
  });

  it('completes a partial cached read through the thread pool', async () => {
    // As the kernel does when only the first pages are cached.
    readNowait.mockImplementation((fd, buf, offset) => realNative.readNowait(fd, buf.subarray(0, 12 * KiB), offset));
    const content = pattern(128 * KiB, 3);
    const { node } = fileNode(content);
    const buf = Buffer.alloc(64 * KiB);
    await fileIo.read(node, 4 * KiB, buf);
    expect(buf.equals(content.subarray(4 * KiB, 68 * KiB))).toBe(true);
  });

  it('keeps trying a file while it only would block, and stops on one that cannot do it', async () => {
    const content = pattern(64 * KiB, 4);
    const { node } = fileNode(content);
    readNowait.mockReturnValue(native.NOWAIT_WOULD_BLOCK);
    await fileIo.read(node, 0, Buffer.alloc(4 * KiB));
    await fileIo.read(node, 0, Buffer.alloc(4 * KiB));
    expect(readNowait).toHaveBeenCalledTimes(2);
    readNowait.mockReturnValue(native.NOWAIT_UNSUPPORTED);
    await fileIo.read(node, 0, Buffer.alloc(4 * KiB));
    const buf = Buffer.alloc(4 * KiB);
    await fileIo.read(node, 8 * KiB, buf);
    expect(readNowait).toHaveBeenCalledTimes(3);
    expect(buf.equals(content.subarray(8 * KiB, 12 * KiB))).toBe(true);
    // A reopened file (a new state) is asked again.
    node.state = { ...node.state };
    await fileIo.read(node, 0, Buffer.alloc(4 * KiB));
    expect(readNowait).toHaveBeenCalledTimes(4);
  });

  it('reads zeros past the end of the file, whole or in part', async () => {
    const content = pattern(10_000, 5);
    const { node } = fileNode(content);
    const across = Buffer.alloc(8 * KiB, 0xff);
    await fileIo.read(node, 8 * KiB, across);
    expect(across.subarray(0, 10_000 - 8 * KiB).equals(content.subarray(8 * KiB))).toBe(true);
    expect(across.subarray(10_000 - 8 * KiB).every((b) => b === 0)).toBe(true);
    const past = Buffer.alloc(4 * KiB, 0xff);
    await fileIo.read(node, 16 * KiB, past);
    expect(past.every((b) => b === 0)).toBe(true);
  });

  it('never takes the fast path on an O_DIRECT node', async () => {
    const content = pattern(64 * KiB, 6);
    // The state says O_DIRECT; the descriptor need not be for the rule to show.
    const { node } = fileNode(content, true);
    const buf = Buffer.alloc(8 * KiB);
    await fileIo.read(node, 0, buf);
    await fileIo.write(node, 0, pattern(4 * KiB, 7), {});
    expect(buf.equals(content.subarray(0, 8 * KiB))).toBe(true);
    expect(readNowait).not.toHaveBeenCalled();
    expect(writeNowait).not.toHaveBeenCalled();
  });

  it('sends requests over 1 MiB straight to the thread pool', async () => {
    const content = pattern(3 * MiB, 9);
    const { node, fd } = fileNode(content);
    const big = Buffer.alloc(MiB + 512);
    await fileIo.read(node, 512, big);
    expect(big.equals(content.subarray(512, MiB + 1024))).toBe(true);
    await fileIo.write(node, 0, pattern(2 * MiB, 10), {});
    expect(readNowait).not.toHaveBeenCalled();
    expect(writeNowait).not.toHaveBeenCalled();
    await fileIo.read(node, 0, Buffer.alloc(MiB));
    expect(readNowait).toHaveBeenCalledTimes(1);
    expect(onDisk(fd, 0, 2 * MiB).equals(pattern(2 * MiB, 10))).toBe(true);
  });

  it.skipIf(!native.nativeAvailable)('lets the event loop run after a burst of cached reads', async () => {
    const content = pattern(MiB, 8);
    const { node } = fileNode(content);
    // Start on a fresh turn: what earlier tests read counts against the current one's budget.
    await new Promise((resolve) => setImmediate(resolve));
    let loopRan = false;
    setImmediate(() => {
      loopRan = true;
    });
    // 256 reads of 64 KiB started in one go: 16 MiB, twice the fast path's budget for one turn of the loop.
    const bufs = Array.from({ length: 256 }, () => Buffer.alloc(64 * KiB));
    const sawLoop = await Promise.all(bufs.map((b, i) => fileIo.read(node, (i % 16) * 64 * KiB, b).then(() => loopRan)));
    expect(sawLoop.filter((ran) => !ran)).toHaveLength(128);
    expect(readNowait).toHaveBeenCalledTimes(256);
    bufs.forEach((b, i) => expect(b.equals(content.subarray((i % 16) * 64 * KiB, ((i % 16) + 1) * 64 * KiB))).toBe(true));
  });
});

describe('file driver writes', () => {
  /** A file system that takes buffered nowait writes, as some do. */
  function acceptingWrites(limit = Infinity): void {
    writeNowait.mockImplementation((fd, buf, offset) => fs.writeSync(fd, buf, 0, Math.min(buf.length, limit), offset));
  }

  it('writes what a nowait write takes on the calling thread, the rest through the thread pool', async () => {
    acceptingWrites(5 * KiB);
    const { node, fd } = fileNode(Buffer.alloc(64 * KiB));
    const data = pattern(32 * KiB, 9);
    await fileIo.write(node, 3 * KiB, data, {});
    expect(writeNowait).toHaveBeenCalledTimes(1);
    expect(onDisk(fd, 3 * KiB, 32 * KiB).equals(data)).toBe(true);
    expect(onDisk(fd, 0, 3 * KiB).every((b) => b === 0)).toBe(true);
  });

  it.each([
    ['would block', () => native.NOWAIT_WOULD_BLOCK],
    ['is not supported', () => native.NOWAIT_UNSUPPORTED],
    ['fails', () => {
      throw Object.assign(new Error('EIO: i/o error, pwritev2'), { code: 'EIO' });
    }],
  ])('writes through the thread pool when the nowait write %s', async (_what, outcome) => {
    writeNowait.mockImplementation(outcome);
    const { node, fd } = fileNode(Buffer.alloc(64 * KiB));
    const data = pattern(20 * KiB, 10);
    await fileIo.write(node, 11, data, { fua: true });
    expect(onDisk(fd, 11, 20 * KiB).equals(data)).toBe(true);
  });

  it('remembers a file that cannot take nowait writes', async () => {
    writeNowait.mockReturnValue(native.NOWAIT_UNSUPPORTED);
    const { node, fd } = fileNode(Buffer.alloc(64 * KiB));
    await fileIo.write(node, 0, pattern(4 * KiB, 11), {});
    await fileIo.write(node, 4 * KiB, pattern(4 * KiB, 12), {});
    expect(writeNowait).toHaveBeenCalledTimes(1);
    expect(onDisk(fd, 4 * KiB, 4 * KiB).equals(pattern(4 * KiB, 12))).toBe(true);
  });

  it('still writes through the thread pool with the fallback addon', async () => {
    writeNowait.mockImplementation(native.fallbackNative.writeNowait);
    readNowait.mockImplementation(native.fallbackNative.readNowait);
    const { node, fd } = fileNode(Buffer.alloc(64 * KiB));
    const data = pattern(16 * KiB, 13);
    await fileIo.write(node, 512, data, {});
    const back = Buffer.alloc(16 * KiB);
    await fileIo.read(node, 512, back);
    expect(back.equals(data)).toBe(true);
    expect(onDisk(fd, 512, 16 * KiB).equals(data)).toBe(true);
  });
});
