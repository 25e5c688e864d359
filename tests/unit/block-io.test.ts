/**
 * The block layer end to end inside one process: nodes opened by GS code,
 * I/O served by the drivers' I/O halves in worker-thread I/O contexts,
 * checked against a model of the writes and against qemu-img.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

import { blockdevAdd, blockdevDel, closeAllNodes, dist, findNode, getDefaultContext, prng, read, request, stopAllContexts, write } from '../helpers/in-process-block';

/* eslint-disable @typescript-eslint/no-require-imports */
const { addIothreadContext } = require(`${dist}/block/global-state/io-contexts.js`);
const { moveToContext } = require(`${dist}/block/global-state/iothread-move.js`);
const { drained } = require(`${dist}/block/global-state/drain.js`);
const { nativeAvailable } = require(`${dist}/native/native.js`);

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-block-io-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

function imageFile(name: string, size: number): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, '');
  fs.truncateSync(f, size);
  return f;
}

describe('file and raw nodes', () => {
  it('read back what was written, at any offset and length, like a model of the image', async () => {
    const size = 4 << 20;
    const file = imageFile('model.raw', size);
    await blockdevAdd({ driver: 'raw', 'node-name': 'm', file: { driver: 'file', filename: file } });
    const model = Buffer.alloc(size);
    const rnd = prng(1);
    for (let i = 0; i < 200; i++) {
      const len = 1 + Math.floor(rnd() * 70_000);
      const off = Math.floor(rnd() * (size - len));
      const data = Buffer.alloc(len, Math.floor(rnd() * 256));
      data.writeUInt32LE(i, 0);
      await write('m', off, data);
      data.copy(model, off);
    }
    await request('m', { op: 'flush' });
    expect((await read('m', 0, size)).equals(model)).toBe(true);
    expect(fs.readFileSync(file).equals(model)).toBe(true);
    await blockdevDel('m');
  });

  it.skipIf(!toolAvailable('qemu-img'))('leaves a file that qemu-img compares equal to the model', async () => {
    const size = 1 << 20;
    const file = imageFile('cmp.raw', size);
    const modelFile = imageFile('cmp-model.raw', size);
    await blockdevAdd({ driver: 'raw', 'node-name': 'c', file: { driver: 'file', filename: file } });
    const data = Buffer.alloc(12345, 0xab);
    await write('c', 777, data);
    const fd = fs.openSync(modelFile, 'r+');
    fs.writeSync(fd, data, 0, data.length, 777);
    fs.closeSync(fd);
    await blockdevDel('c');
    execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, modelFile]);
  });

  it('maps a raw window (offset, size) onto its file', async () => {
    const file = imageFile('window.raw', 64 * 1024);
    await blockdevAdd({ driver: 'file', 'node-name': 'wf', filename: file });
    await blockdevAdd({ driver: 'raw', 'node-name': 'w', file: 'wf', offset: 4096, size: 8192 });
    expect(findNode('w').length).toBe(8192);
    await write('w', 0, Buffer.from('window'));
    expect((await read('wf', 4096, 6)).toString()).toBe('window');
    await expect(read('w', 8190, 4)).rejects.toThrow(/beyond the end/);
    await blockdevDel('w');
    await blockdevDel('wf');
  });

  it('refuses writes to a read-only node with EPERM', async () => {
    const file = imageFile('ro.raw', 4096);
    await blockdevAdd({ driver: 'file', 'node-name': 'ro', filename: file, 'read-only': true });
    await expect(write('ro', 0, Buffer.from('x'))).rejects.toMatchObject({ code: 'EPERM' });
    await blockdevDel('ro');
  });

  it.skipIf(!nativeAvailable)('punches holes for write-zeroes with unmap and reports them in block status', async () => {
    const size = 1 << 20;
    const file = imageFile('sparse.raw', size);
    await blockdevAdd({ driver: 'file', 'node-name': 's', filename: file, discard: 'unmap' });
    await write('s', 0, Buffer.alloc(size, 7));
    await request('s', { op: 'flush' });
    const allocatedBefore = fs.statSync(file).blocks;
    await request('s', { op: 'write-zeroes', offset: 256 * 1024, bytes: 512 * 1024, flags: { mayUnmap: true } });
    expect(fs.statSync(file).blocks).toBeLessThan(allocatedBefore);
    const zeros = await read('s', 256 * 1024, 512 * 1024);
    expect(zeros.every((b) => b === 0)).toBe(true);
    const st = await request('s', { op: 'block-status', offset: 256 * 1024, bytes: 512 * 1024 });
    expect(st.status!.status & 0x02).toBe(0x02);
    const data = await request('s', { op: 'block-status', offset: 0, bytes: size });
    expect(data.status).toMatchObject({ bytes: 256 * 1024 });
    expect(data.status!.status & 0x01).toBe(0x01);
    await request('s', { op: 'discard', offset: 0, bytes: 256 * 1024 });
    const st2 = await request('s', { op: 'block-status', offset: 0, bytes: 4096 });
    expect(st2.status!.status & 0x02).toBe(0x02);
    await blockdevDel('s');
  });

  it('serves unaligned requests with cache.direct=on through read-modify-write', async () => {
    const file = imageFile('direct.raw', 1 << 20);
    await blockdevAdd({ driver: 'raw', 'node-name': 'd', cache: { direct: true }, file: { driver: 'file', filename: file } });
    const model = Buffer.alloc(1 << 20);
    // Concurrent unaligned writes into the same 4 KiB blocks must all land.
    const writes = Array.from({ length: 64 }, (_, i) => ({ off: 1000 + i * 700, data: Buffer.alloc(300, i + 1) }));
    await Promise.all(writes.map((w) => write('d', w.off, w.data)));
    for (const w of writes) w.data.copy(model, w.off);
    expect((await read('d', 0, 1 << 20)).equals(model)).toBe(true);
    await blockdevDel('d');
    expect(fs.readFileSync(file).equals(model)).toBe(true);
  });

  it('resizes a file node with truncate', async () => {
    const file = imageFile('grow.raw', 4096);
    await blockdevAdd({ driver: 'file', 'node-name': 'g', filename: file });
    expect((await request('g', { op: 'truncate', length: 8192, exact: true, preallocation: 'off' })).length).toBe(8192);
    expect(fs.statSync(file).size).toBe(8192);
    await blockdevDel('g');
  });
});

describe('detect-zeroes', () => {
  it.skipIf(!nativeAvailable)('turns a write of zeros into a hole with detect-zeroes=unmap', async () => {
    const size = 1 << 20;
    const file = imageFile('detect.raw', size);
    await blockdevAdd({ driver: 'file', 'node-name': 'dz', filename: file, discard: 'unmap', 'detect-zeroes': 'unmap' });
    await write('dz', 0, Buffer.alloc(size, 1));
    await request('dz', { op: 'flush' });
    const before = fs.statSync(file).blocks;
    await write('dz', 0, Buffer.alloc(size / 2));
    await request('dz', { op: 'flush' });
    expect(fs.statSync(file).blocks).toBeLessThan(before);
    expect((await read('dz', 0, size / 2)).every((b) => b === 0)).toBe(true);
    expect((await read('dz', size / 2, 16)).every((b) => b === 1)).toBe(true);
    await blockdevDel('dz');
  });
});

const canLoop = process.getuid?.() === 0 && (() => {
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return fs.existsSync('/dev/loop-control');
  } catch {
    return false;
  }
})();

describe('host_device nodes', () => {
  it.skipIf(!canLoop)('read and write a block device (a loop device) and report its size', async () => {
    const backing = imageFile('loop.img', 8 << 20);
    const dev = execFileSync('losetup', ['-f', '--show', backing]).toString().trim();
    try {
      await blockdevAdd({ driver: 'host_device', 'node-name': 'hd', filename: dev });
      expect(findNode('hd').length).toBe(8 << 20);
      await write('hd', 4096, Buffer.from('on a block device'));
      await request('hd', { op: 'flush' });
      expect((await read('hd', 4096, 17)).toString()).toBe('on a block device');
      await blockdevDel('hd');
      const fd = fs.openSync(backing, 'r');
      const buf = Buffer.alloc(17);
      fs.readSync(fd, buf, 0, 17, 4096);
      fs.closeSync(fd);
      expect(buf.toString()).toBe('on a block device');
    } finally {
      execFileSync('losetup', ['-d', dev]);
    }
  });

  it('refuses a regular file, as the reference does', async () => {
    const file = imageFile('not-a-device.raw', 4096);
    await expect(blockdevAdd({ driver: 'host_device', 'node-name': 'nd', filename: file })).rejects.toThrow(`'host_device' driver requires '${file}' to be either a character or block device`);
  });
});

describe('null nodes', () => {
  it('read zeros and report zero blocks with read-zeroes=on', async () => {
    await blockdevAdd({ driver: 'null-co', 'node-name': 'z', size: 1 << 20, 'read-zeroes': true });
    expect((await read('z', 4096, 4096)).every((b) => b === 0)).toBe(true);
    const st = await request('z', { op: 'block-status', offset: 0, bytes: 1 << 20 });
    expect(st.status).toMatchObject({ bytes: 1 << 20 });
    expect(st.status!.status & 0x02).toBe(0x02);
    await blockdevDel('z');
  });
});

describe('I/O contexts and drained sections', () => {
  it('waits for in-flight requests before a drained section starts', async () => {
    await blockdevAdd({ driver: 'null-co', 'node-name': 'slow', size: 1 << 20, 'latency-ns': 200_000_000 });
    const events: string[] = [];
    const pending = read('slow', 0, 512).then(() => events.push('read done'));
    await new Promise((r) => setTimeout(r, 20));
    await drained([findNode('slow')], () => {
      events.push('drained');
    });
    await pending;
    expect(events).toEqual(['read done', 'drained']);
    await blockdevDel('slow');
  });

  it('moves a node and its parents to an iothread, keeping their data', async () => {
    const file = imageFile('move.raw', 65536);
    await blockdevAdd({ driver: 'raw', 'node-name': 'mv', file: { driver: 'file', filename: file, 'node-name': 'mvf' } });
    await write('mv', 100, Buffer.from('before the move'));
    const io = addIothreadContext('io-move');
    await moveToContext(findNode('mvf'), io, false);
    expect(findNode('mv').ctx).toBe(io);
    expect(findNode('mvf').ctx).toBe(io);
    expect((await read('mv', 100, 15)).toString()).toBe('before the move');
    await write('mv', 200, Buffer.from('after'));
    await moveToContext(findNode('mv'), getDefaultContext(), false);
    expect((await read('mv', 200, 5)).toString()).toBe('after');
    await blockdevDel('mv');
  });
});
