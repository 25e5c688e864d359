/**
 * Writing qcow2 images through qbd: every image it writes must pass
 * `qemu-img check` with no errors and no leaks and hold exactly the data of
 * a raw model of the writes (`qemu-img compare`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import {
  addEventSink,
  blockdevAdd,
  check,
  blockdevDel,
  closeAllNodes,
  createContext,
  expectClean,
  expectSameAs,
  findNode,
  getDefaultContext,
  gsDrivers,
  prng,
  qemuImg,
  qemuIo,
  read,
  removeEventSink,
  request,
  stopAllContexts,
  write,
  writeModel,
} from './helpers';

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-qcow2-write-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Workload {
  size: number;
  ops: number;
  seed: number;
  maxLen: number;
  /** Requests issued together, so some allocate the same cluster at once. */
  parallel: number;
}

/** Random writes, zeroes and discards across cluster boundaries, mirrored in `model`. */
async function runWorkload(node: string, model: Buffer, w: Workload): Promise<void> {
  const rnd = prng(w.seed);
  for (let i = 0; i < w.ops; i += w.parallel) {
    const batch: Array<Promise<unknown>> = [];
    const taken: Array<[number, number]> = [];
    for (let j = 0; j < w.parallel; j++) {
      const len = 1 + Math.floor(rnd() * w.maxLen);
      const off = Math.floor(rnd() * (w.size - len));
      // Overlapping requests in flight together have no defined order; keep batches disjoint in bytes (not clusters).
      if (taken.some(([a, b]) => off < b && a < off + len)) continue;
      taken.push([off, off + len]);
      const kind = rnd();
      if (kind < 0.7) {
        const data = Buffer.alloc(len, (i + j) % 251);
        if (len >= 4) data.writeUInt32LE(i + j, 0);
        data.copy(model, off);
        batch.push(write(node, off, data));
      } else if (kind < 0.85) {
        model.fill(0, off, off + len);
        batch.push(request(node, { op: 'write-zeroes', offset: off, bytes: len, flags: { mayUnmap: rnd() < 0.5 } }));
      } else {
        // Discard leaves unspecified content; qcow2 v3 makes whole discarded clusters read as zeros.
        batch.push(
          request(node, { op: 'discard', offset: off, bytes: len }).then(async () => {
            const data = await read(node, off, len);
            data.copy(model, off);
          }),
        );
      }
      if (rnd() < 0.05) batch.push(request(node, { op: 'flush' }));
    }
    await Promise.all(batch);
  }
}

function newImage(name: string, size: number, opts = ''): string {
  const f = path.join(dir, name);
  qemuImg('create', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), f, String(size));
  return f;
}

describe.skipIf(!toolAvailable('qemu-img'))('writing qcow2 images', () => {
  it('survives a randomized workload with small caches, leaving a clean image equal to the model', async () => {
    const size = 24 << 20;
    const img = newImage('random.qcow2', size, 'cluster_size=4096');
    await blockdevAdd({
      driver: 'qcow2',
      'node-name': 'rw',
      discard: 'unmap',
      'l2-cache-size': 4 * 4096,
      'refcount-cache-size': 4 * 4096,
      file: { driver: 'file', filename: img },
    });
    const model = Buffer.alloc(size);
    await runWorkload('rw', model, { size, ops: 1200, seed: 11, maxLen: 40_000, parallel: 6 });
    expect((await read('rw', 0, size)).equals(model)).toBe(true);
    await blockdevDel('rw');
    const modelFile = path.join(dir, 'random.raw');
    writeModel(modelFile, model);
    expectClean(img);
    expectSameAs(img, modelFile);
  });

  it('works over a file opened with cache.direct (O_DIRECT alignment below and above the cluster size)', async () => {
    for (const clusterSize of [512, 65536]) {
      const size = 4 << 20;
      const img = newImage(`direct-${clusterSize}.qcow2`, size, `cluster_size=${clusterSize}`);
      await blockdevAdd({ driver: 'qcow2', 'node-name': 'dio', discard: 'unmap', cache: { direct: true }, file: { driver: 'file', filename: img } });
      const model = Buffer.alloc(size);
      await runWorkload('dio', model, { size, ops: 120, seed: clusterSize, maxLen: 30_000, parallel: 3 });
      expect((await read('dio', 0, size)).equals(model)).toBe(true);
      await blockdevDel('dio');
      const modelFile = path.join(dir, `direct-${clusterSize}.raw`);
      writeModel(modelFile, model);
      expectClean(img);
      expectSameAs(img, modelFile);
    }
  });

  it('allocates new refcount blocks and grows the refcount table (512-byte clusters, 64-bit refcounts)', async () => {
    const size = 4 << 20;
    const img = newImage('refgrow.qcow2', size, 'cluster_size=512,refcount_bits=64');
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'rg', 'l2-cache-size': 8 * 512, 'refcount-cache-size': 4 * 512, file: { driver: 'file', filename: img } });
    const model = Buffer.alloc(size);
    await runWorkload('rg', model, { size, ops: 300, seed: 5, maxLen: 30_000, parallel: 4 });
    // Fill most of the image: one refcount table cluster covers 2 MiB here, so the table must grow.
    const big = Buffer.alloc(1 << 20, 0xc3);
    for (let off = 0; off < 3 << 20; off += big.length) {
      big.copy(model, off);
      await write('rg', off, big);
    }
    expect((await read('rg', 0, size)).equals(model)).toBe(true);
    await blockdevDel('rg');
    const modelFile = path.join(dir, 'refgrow.raw');
    writeModel(modelFile, model);
    expectClean(img);
    expectSameAs(img, modelFile);
    const info = JSON.parse(qemuImg('info', '--output=json', img));
    expect(info['cluster-size']).toBe(512);
    // refcount_table_clusters in the header: the table grew past one cluster.
    expect(fs.readFileSync(img).readUInt32BE(56)).toBeGreaterThan(1);
  });

  for (const bits of [1, 8, 32]) {
    it(`keeps ${bits}-bit refcounts consistent`, async () => {
      const size = 4 << 20;
      const img = newImage(`w-rb${bits}.qcow2`, size, `refcount_bits=${bits},cluster_size=4096`);
      await blockdevAdd({ driver: 'qcow2', 'node-name': `wr${bits}`, discard: 'unmap', file: { driver: 'file', filename: img } });
      const model = Buffer.alloc(size);
      await runWorkload(`wr${bits}`, model, { size, ops: 200, seed: bits, maxLen: 20_000, parallel: 3 });
      await blockdevDel(`wr${bits}`);
      const modelFile = path.join(dir, `w-rb${bits}.raw`);
      writeModel(modelFile, model);
      expectClean(img);
      expectSameAs(img, modelFile);
    });
  }

  it('serialises concurrent writes that allocate the same cluster', async () => {
    const size = 1 << 20;
    const img = newImage('same.qcow2', size);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'same', file: { driver: 'file', filename: img } });
    const model = Buffer.alloc(size);
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 16; i++) {
      const data = Buffer.alloc(4096, i + 1);
      data.copy(model, i * 4096);
      writes.push(write('same', i * 4096, data));
    }
    await Promise.all(writes);
    await blockdevDel('same');
    const modelFile = path.join(dir, 'same.raw');
    writeModel(modelFile, model);
    expectClean(img);
    expectSameAs(img, modelFile);
    // One data cluster: every write landed in the cluster the first allocated.
    const map = JSON.parse(qemuImg('map', '--output=json', img)) as Array<{ data: boolean; length: number }>;
    expect(map.filter((m) => m.data).reduce((a, m) => a + m.length, 0)).toBe(65536);
  });

  it('copies partial clusters from the backing file on write, and zeroes mask backing data', async () => {
    const base = newImage('cow-base.qcow2', 2 << 20);
    qemuIo(base, 'write -P 0x11 0 2M');
    const top = path.join(dir, 'cow-top.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, String(3 << 20));
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'cow', discard: 'unmap', file: { driver: 'file', filename: top } });
    const model = Buffer.alloc(3 << 20);
    model.fill(0x11, 0, 2 << 20);
    const put = async (off: number, data: Buffer) => {
      data.copy(model, off);
      await write('cow', off, data);
    };
    await put(1000, Buffer.alloc(3000, 0x22));
    await put(65536 * 3 - 100, Buffer.alloc(300, 0x33));
    await put((2 << 20) - 2000, Buffer.alloc(5000, 0x44));
    await request('cow', { op: 'write-zeroes', offset: 65536 * 8, bytes: 65536 * 2 + 777 });
    model.fill(0, 65536 * 8, 65536 * 10 + 777);
    await request('cow', { op: 'discard', offset: 65536 * 12, bytes: 65536 });
    model.fill(0, 65536 * 12, 65536 * 13);
    expect((await read('cow', 0, 3 << 20)).equals(model)).toBe(true);
    await blockdevDel('cow');
    const modelFile = path.join(dir, 'cow.raw');
    writeModel(modelFile, model);
    expectClean(top);
    expectSameAs(top, modelFile);
  });

  it('writes v2 images, and over compressed clusters', async () => {
    const raw = path.join(dir, 'comp-src.raw');
    const src = Buffer.alloc(1 << 20);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7) % 13;
    fs.writeFileSync(raw, src);
    for (const [name, opts] of [
      ['comp-v3.qcow2', ['-c', '-O', 'qcow2']],
      ['comp-v2.qcow2', ['-c', '-O', 'qcow2', '-o', 'compat=0.10']],
    ] as const) {
      const img = path.join(dir, name);
      qemuImg('convert', ...opts, raw, img);
      await blockdevAdd({ driver: 'qcow2', 'node-name': 'cz', discard: 'unmap', file: { driver: 'file', filename: img } });
      const model = Buffer.from(src);
      await runWorkload('cz', model, { size: src.length, ops: 60, seed: 3, maxLen: 100_000, parallel: 2 });
      await blockdevDel('cz');
      const modelFile = path.join(dir, `${name}.raw`);
      writeModel(modelFile, model);
      expectClean(img);
      expectSameAs(img, modelFile);
    }
  });

  it('copies clusters shared with an internal snapshot before writing, leaving the snapshot intact', async () => {
    const img = newImage('snap.qcow2', 2 << 20, 'cluster_size=4096');
    qemuIo(img, 'write -P 0x31 0 2M');
    qemuImg('snapshot', '-c', 'before', img);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'sn', discard: 'unmap', file: { driver: 'file', filename: img } });
    const model = Buffer.alloc(2 << 20, 0x31);
    await runWorkload('sn', model, { size: 2 << 20, ops: 80, seed: 21, maxLen: 50_000, parallel: 3 });
    await blockdevDel('sn');
    const modelFile = path.join(dir, 'snap.raw');
    writeModel(modelFile, model);
    expectClean(img);
    expectSameAs(img, modelFile);
    // The snapshot still holds the data it was taken with.
    const snapCopy = path.join(dir, 'snap-copy.raw');
    qemuImg('convert', '-l', 'before', '-O', 'raw', img, snapCopy);
    expect(fs.readFileSync(snapCopy).every((b) => b === 0x31)).toBe(true);
  });

  it('passes guest discards down to the file once the clusters are free, with discard=unmap', async () => {
    const { nativeAvailable } = require('../../dist/src/native/native.js');
    if (!nativeAvailable) return;
    const img = newImage('punch.qcow2', 4 << 20);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'pu', discard: 'unmap', file: { driver: 'file', filename: img } });
    await write('pu', 0, Buffer.alloc(2 << 20, 8));
    await request('pu', { op: 'flush' });
    const before = fs.statSync(img).blocks;
    await request('pu', { op: 'discard', offset: 0, bytes: 2 << 20 });
    await request('pu', { op: 'flush' });
    expect(fs.statSync(img).blocks).toBeLessThan(before - 2048);
    expect((await read('pu', 0, 2 << 20)).every((b) => b === 0)).toBe(true);
    await blockdevDel('pu');
    expectClean(img);
  });

  it('grows an image, its L1 table included, and writes past the old end', async () => {
    const img = newImage('grow.qcow2', 1 << 20, 'cluster_size=512');
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'gr', file: { driver: 'file', filename: img } });
    await write('gr', 0, Buffer.alloc(4096, 1));
    const newSize = 64 << 20;
    expect((await request('gr', { op: 'truncate', length: newSize, exact: false, preallocation: 'off' })).length).toBe(newSize);
    await write('gr', newSize - 4096, Buffer.alloc(4096, 2));
    await blockdevDel('gr');
    expectClean(img);
    const info = JSON.parse(qemuImg('info', '--output=json', img));
    expect(info['virtual-size']).toBe(newSize);
    qemuIo(img, 'read -P 1 0 4k', `read -P 2 ${newSize - 4096} 4k`, 'read -P 0 4k 1M');
  });

  it('marks the image corrupt, fails the write and emits BLOCK_IMAGE_CORRUPTED when data would overwrite metadata', async () => {
    const img = newImage('overlap.qcow2', 1 << 20);
    qemuIo(img, 'write -P 1 0 64k');
    // Point the first L2 entry at the L1 table (cluster 3 in a fresh image).
    const fd = fs.openSync(img, 'r+');
    const hdr = Buffer.alloc(48);
    fs.readSync(fd, hdr, 0, 48, 0);
    const l1Off = Number(hdr.readBigUInt64BE(40));
    const l1 = Buffer.alloc(8);
    fs.readSync(fd, l1, 0, 8, l1Off);
    const l2Off = Number(l1.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(BigInt(l1Off) | (1n << 63n));
    fs.writeSync(fd, entry, 0, 8, l2Off);
    fs.closeSync(fd);
    const events: Array<{ event: string; data: Record<string, unknown> }> = [];
    const sink = { sendEvent: (ev: { event: string; data: Record<string, unknown> }) => events.push(ev) };
    addEventSink(sink);
    try {
      await blockdevAdd({ driver: 'qcow2', 'node-name': 'ov', file: { driver: 'file', filename: img } });
      await expect(write('ov', 0, Buffer.alloc(512, 9))).rejects.toThrow(/Preventing invalid write on metadata \(overlaps with active L1 table\)/);
      for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(events[0]).toMatchObject({
        event: 'BLOCK_IMAGE_CORRUPTED',
        data: { device: '', 'node-name': 'ov', msg: 'Preventing invalid write on metadata (overlaps with active L1 table)', fatal: true },
      });
      await expect(read('ov', 0, 512)).rejects.toThrow(/corrupt/);
      await blockdevDel('ov');
    } finally {
      removeEventSink(sink);
    }
    const info = JSON.parse(qemuImg('info', '--output=json', '-U', img));
    expect(info['format-specific'].data.corrupt).toBe(true);
  });

  it('rebuilds the refcounts of a dirty image (lazy refcounts, not closed) before using it read-write', async () => {
    const img = newImage('dirty.qcow2', 4 << 20, 'lazy_refcounts=on');
    // qemu-io's abort kills it like a crash: the image stays dirty.
    expect(() => qemuIo(img, 'write -P 0x5a 0 300k', 'write -P 0x6b 1M 64k', 'abort')).toThrow();
    expect(check(img).status).toBe(2);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'dy', file: { driver: 'file', filename: img } });
    expect((await read('dy', 0, 4096)).every((b) => b === 0x5a)).toBe(true);
    await write('dy', 2 << 20, Buffer.alloc(65536, 0x7c));
    await blockdevDel('dy');
    expectClean(img);
    qemuIo(img, 'read -P 0x5a 0 300k', 'read -P 0x6b 1M 64k', `read -P 0x7c ${2 << 20} 64k`);
    expect(JSON.parse(qemuImg('info', '--output=json', img))['dirty-flag']).toBe(false);
  });

  it('clears unknown autoclear bits before the first write, and keeps unknown header extensions', async () => {
    const img = newImage('autoclear.qcow2', 1 << 20);
    const fd = fs.openSync(img, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(1n << 20n);
    fs.writeSync(fd, b, 0, 8, 88);
    // An unknown extension after the header (v3 header length 112 in a fresh image), before the end marker.
    const hdr = Buffer.alloc(4096);
    fs.readSync(fd, hdr, 0, 4096, 0);
    const headerLength = hdr.readUInt32BE(100);
    const rest = hdr.subarray(headerLength, 2048);
    const ext = Buffer.alloc(16);
    ext.writeUInt32BE(0x12345678, 0);
    ext.writeUInt32BE(5, 4);
    ext.write('hello', 8);
    fs.writeSync(fd, Buffer.concat([ext, rest.subarray(0, rest.length - 16)]), 0, rest.length, headerLength);
    fs.closeSync(fd);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'ac', file: { driver: 'file', filename: img } });
    const raw = fs.readFileSync(img);
    expect(raw.readBigUInt64BE(88)).toBe(1n << 20n);
    await write('ac', 0, Buffer.alloc(4096, 5));
    await blockdevDel('ac');
    const after = fs.readFileSync(img);
    expect(after.readBigUInt64BE(88)).toBe(0n);
    expect(after.subarray(headerLength, headerLength + 16).equals(ext)).toBe(true);
    expectClean(img);
  });
});

describe.skipIf(!toolAvailable('qemu-img'))('creating images', () => {
  async function createFile(name: string, size: number, preallocation = 'off'): Promise<string> {
    const f = path.join(dir, name);
    await gsDrivers.get('file').create({ driver: 'file', filename: f, size, preallocation }, createContext());
    return f;
  }

  it('creates raw files with preallocation off, falloc and full', async () => {
    for (const mode of ['off', 'falloc', 'full']) {
      const f = await createFile(`create-${mode}.raw`, 1 << 20, mode);
      const st = fs.statSync(f);
      expect(st.size).toBe(1 << 20);
      if (mode === 'off') expect(st.blocks * 512).toBeLessThan(1 << 20);
      else expect(st.blocks * 512).toBeGreaterThanOrEqual(1 << 20);
    }
    await expect(createFile('bad.raw', 4096, 'metadata')).rejects.toThrow(/Unsupported preallocation mode/);
  });

  const variants: Array<[string, Record<string, unknown>]> = [
    ['defaults', {}],
    ['v2', { version: 'v2' }],
    ['512-byte clusters, 1-bit refcounts', { 'cluster-size': 512, 'refcount-bits': 1 }],
    ['2 MiB clusters, 64-bit refcounts, lazy refcounts', { 'cluster-size': 2 * 1024 * 1024, 'refcount-bits': 64, 'lazy-refcounts': true }],
    ['metadata preallocation', { preallocation: 'metadata', 'cluster-size': 4096 }],
    ['falloc preallocation', { preallocation: 'falloc' }],
    ['full preallocation', { preallocation: 'full' }],
  ];
  variants.forEach(([what, extra], i) => {
    it(`creates qcow2 images that qemu-img accepts: ${what}`, async () => {
      const size = 8 << 20;
      const f = await createFile(`create-${i}.qcow2`, 0);
      await blockdevAdd({ driver: 'file', 'node-name': `cf${i}`, filename: f });
      await gsDrivers.get('qcow2').create({ driver: 'qcow2', file: `cf${i}`, size, ...extra }, createContext());
      await blockdevAdd({ driver: 'qcow2', 'node-name': `cq${i}`, file: `cf${i}` });
      const model = Buffer.alloc(size);
      await runWorkload(`cq${i}`, model, { size, ops: 40, seed: i, maxLen: 200_000, parallel: 2 });
      await blockdevDel(`cq${i}`);
      await blockdevDel(`cf${i}`);
      const modelFile = path.join(dir, `create-${i}.raw`);
      writeModel(modelFile, model);
      expectClean(f);
      expectSameAs(f, modelFile);
      const info = JSON.parse(qemuImg('info', '--output=json', f));
      expect(info['virtual-size']).toBe(size);
      if (extra['cluster-size']) expect(info['cluster-size']).toBe(extra['cluster-size']);
      if (extra.version === 'v2') expect(info['format-specific'].data.compat).toBe('0.10');
      if (extra['refcount-bits']) expect(info['format-specific'].data['refcount-bits']).toBe(extra['refcount-bits']);
      if (extra['lazy-refcounts']) expect(info['format-specific'].data['lazy-refcounts']).toBe(true);
    });
  });

  it('creates an overlay with a backing file and format that reads through to it', async () => {
    const base = path.join(dir, 'cb-base.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    qemuIo(base, 'write -P 0x66 0 1M');
    const f = await createFile('cb-top.qcow2', 0);
    await blockdevAdd({ driver: 'file', 'node-name': 'cbf', filename: f });
    await gsDrivers.get('qcow2').create({ driver: 'qcow2', file: 'cbf', size: 1 << 20, 'backing-file': base, 'backing-fmt': 'qcow2' }, createContext());
    await blockdevDel('cbf');
    expectClean(f);
    const info = JSON.parse(qemuImg('info', '--output=json', f));
    expect(info['backing-filename']).toBe(base);
    expect(info['backing-filename-format']).toBe('qcow2');
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'cbt', file: { driver: 'file', filename: f } });
    expect((await read('cbt', 1000, 5000)).every((b) => b === 0x66)).toBe(true);
    await blockdevDel('cbt');
  });

  it('refuses options the reference refuses', async () => {
    const f = await createFile('cbad.qcow2', 0);
    await blockdevAdd({ driver: 'file', 'node-name': 'cbad', filename: f });
    const create = (o: Record<string, unknown>) => gsDrivers.get('qcow2').create({ driver: 'qcow2', file: 'cbad', size: 1 << 20, ...o }, createContext());
    await expect(create({ 'cluster-size': 1000 })).rejects.toThrow('Cluster size must be a power of two between 512 and 2048k');
    await expect(create({ 'refcount-bits': 3 })).rejects.toThrow('Refcount width must be a power of two and may not exceed 64 bits');
    await expect(create({ version: 'v2', 'lazy-refcounts': true })).rejects.toThrow(/Lazy refcounts only supported/);
    await expect(create({ size: 1000 })).rejects.toThrow('Image size must be a multiple of 512 bytes');
    await blockdevDel('cbad');
    expect(findNode('cbad')).toBeUndefined();
  });
});
