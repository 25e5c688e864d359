/**
 * qcow2 images made by qemu-img — every cluster size, refcount widths, v2 and
 * v3, compressed clusters, zero clusters, backing chains — read back through
 * qbd exactly as qemu-img reads them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { blockdevAdd, blockdevDel, closeAllNodes, getDefaultContext, prng, qemuImg, qemuIo, queryNamedBlockNodes, rawOf, read, request, stopAllContexts } from './helpers';

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-qcow2-read-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A raw file with a recognisable pattern and holes, for qemu-img convert. */
function patternRaw(name: string, size: number, seed: number): string {
  const f = path.join(dir, name);
  const buf = Buffer.alloc(size);
  const rnd = prng(seed);
  for (let off = 0; off < size; off += 4096) {
    if (rnd() < 0.4) continue;
    const chunk = buf.subarray(off, off + 4096);
    if (rnd() < 0.5) chunk.fill(Math.floor(rnd() * 255) + 1);
    else for (let i = 0; i < chunk.length; i++) chunk[i] = Math.floor(rnd() * 256);
  }
  fs.writeFileSync(f, buf);
  return f;
}

let seq = 0;
async function readWhole(file: string, opts: Record<string, unknown> = {}): Promise<Buffer> {
  const name = `r${++seq}`;
  await blockdevAdd({ driver: 'qcow2', 'node-name': name, 'read-only': true, file: { driver: 'file', filename: file }, ...opts });
  try {
    const len = (await import('./helpers')).findNode(name).length as number;
    const out = Buffer.alloc(len);
    // Odd request sizes cross cluster and L2 boundaries.
    for (let off = 0; off < len; ) {
      const n = Math.min(len - off, 200_000 + (off % 7) * 1000);
      (await read(name, off, n)).copy(out, off);
      off += n;
    }
    return out;
  } finally {
    await blockdevDel(name);
  }
}

describe.skipIf(!toolAvailable('qemu-img'))('qcow2 images made by qemu-img', () => {
  for (const clusterSize of [512, 4096, 65536, 2 * 1024 * 1024]) {
    it(`read back like qemu-img reads them with ${clusterSize}-byte clusters`, async () => {
      const raw = patternRaw(`c${clusterSize}.raw`, 3 << 20, clusterSize);
      const img = path.join(dir, `c${clusterSize}.qcow2`);
      qemuImg('convert', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, raw, img);
      expect((await readWhole(img)).equals(fs.readFileSync(raw))).toBe(true);
    });
  }

  for (const bits of [1, 2, 4, 8, 32, 64]) {
    it(`read back with ${bits}-bit refcounts`, async () => {
      const raw = patternRaw(`rb${bits}.raw`, 1 << 20, bits);
      const img = path.join(dir, `rb${bits}.qcow2`);
      qemuImg('convert', '-O', 'qcow2', '-o', `refcount_bits=${bits},cluster_size=4096`, raw, img);
      expect((await readWhole(img)).equals(fs.readFileSync(raw))).toBe(true);
    });
  }

  it('reads v2 (compat 0.10) images', async () => {
    const raw = patternRaw('v2.raw', 1 << 20, 99);
    const img = path.join(dir, 'v2.qcow2');
    qemuImg('convert', '-O', 'qcow2', '-o', 'compat=0.10', raw, img);
    expect((await readWhole(img)).equals(fs.readFileSync(raw))).toBe(true);
  });

  for (const clusterSize of [4096, 65536]) {
    it(`decompresses clusters of images converted with -c (${clusterSize}-byte clusters)`, async () => {
      const raw = patternRaw(`z${clusterSize}.raw`, 2 << 20, 7 + clusterSize);
      const img = path.join(dir, `z${clusterSize}.qcow2`);
      qemuImg('convert', '-c', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, raw, img);
      expect((await readWhole(img)).equals(fs.readFileSync(raw))).toBe(true);
    });
  }

  it('reads zero clusters as zeros even over backing data', async () => {
    const base = path.join(dir, 'zb-base.qcow2');
    const top = path.join(dir, 'zb-top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    qemuIo(base, 'write -P 0x5a 0 1M');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, 'write -z 64k 128k', 'write -P 0x77 512k 4k');
    expect((await readWhole(top)).equals(rawOf(top, dir))).toBe(true);
  });

  it('follows a three-level backing chain named in the headers, with relative names and a shorter base', async () => {
    const base = path.join(dir, 'chain-base.qcow2');
    const mid = path.join(dir, 'chain-mid.qcow2');
    const top = path.join(dir, 'chain-top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    qemuIo(base, 'write -P 1 0 1M');
    qemuImg('create', '-f', 'qcow2', '-b', 'chain-base.qcow2', '-F', 'qcow2', mid, '2M');
    qemuIo(mid, 'write -P 2 256k 512k', 'write -P 4 1536k 64k');
    qemuImg('create', '-f', 'qcow2', '-b', 'chain-mid.qcow2', '-F', 'qcow2', top, '3M');
    qemuIo(top, 'write -P 3 300k 10k');
    const data = await readWhole(top);
    expect(data.equals(rawOf(top, dir))).toBe(true);
    expect(data[2 * 1024 * 1024 + 5]).toBe(0);
  });

  it('refuses a backing chain that loops back to one of its images', async () => {
    const a = path.join(dir, 'loop-a.qcow2');
    const b = path.join(dir, 'loop-b.qcow2');
    qemuImg('create', '-f', 'qcow2', a, '1M');
    qemuImg('create', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b);
    qemuImg('rebase', '-u', '-b', b, '-F', 'qcow2', a);
    await expect(blockdevAdd({ driver: 'qcow2', 'node-name': 'loop', file: { driver: 'file', filename: a } })).rejects.toThrow(/loops back/);
  });

  it('opens a raw backing file without a backing format by probing it', async () => {
    const base = path.join(dir, 'probe-base.raw');
    fs.writeFileSync(base, Buffer.alloc(1 << 20, 0x42));
    const top = path.join(dir, 'probe-top.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'raw', top);
    // Drop the backing format extension by rebasing unsafely without -F.
    qemuImg('rebase', '-u', '-b', base, '-F', 'raw', top);
    const data = await readWhole(top);
    expect(data.every((b) => b === 0x42)).toBe(true);
  });

  it('takes backing: null to mean no backing file, and an explicit node reference', async () => {
    const base = path.join(dir, 'explicit-base.raw');
    fs.writeFileSync(base, Buffer.alloc(1 << 20, 0x61));
    const top = path.join(dir, 'explicit-top.qcow2');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'raw', top);
    expect((await readWhole(top, { backing: null })).every((b) => b === 0)).toBe(true);
    await blockdevAdd({ driver: 'raw', 'node-name': 'other', 'read-only': true, file: { driver: 'file', filename: base } });
    expect((await readWhole(top, { backing: 'other' })).every((b) => b === 0x61)).toBe(true);
    await blockdevDel('other');
  });

  it('reports allocation depth in block status along the chain', async () => {
    const base = path.join(dir, 'bs-base.qcow2');
    const top = path.join(dir, 'bs-top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    qemuIo(base, 'write -P 1 0 64k');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, 'write -P 2 64k 64k');
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'bs', 'read-only': true, file: { driver: 'file', filename: top } });
    const a = await request('bs', { op: 'block-status', offset: 0, bytes: 1 << 20 });
    expect(a.status).toMatchObject({ bytes: 65536, depth: 2 });
    const b = await request('bs', { op: 'block-status', offset: 65536, bytes: 65536 * 4 });
    expect(b.status).toMatchObject({ bytes: 65536, depth: 1 });
    expect(b.status!.status & 0x11).toBe(0x11);
    const c = await request('bs', { op: 'block-status', offset: 131072, bytes: 65536 });
    expect(c.status).toMatchObject({ depth: 0 });
    expect(c.status!.status & 0x02).toBe(0x02);
    await blockdevDel('bs');
  });

  it('shows qcow2 nodes in query-named-block-nodes the way the reference does', async () => {
    const base = path.join(dir, 'q-base.qcow2');
    const top = path.join(dir, 'q-top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '1M');
    qemuImg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'qtop', file: { driver: 'file', filename: top } });
    const info = queryNamedBlockNodes().find((n: { 'node-name': string }) => n['node-name'] === 'qtop');
    expect(info).toMatchObject({
      drv: 'qcow2',
      file: top,
      backing_file: base,
      backing_file_depth: 1,
      image: {
        filename: top,
        format: 'qcow2',
        'virtual-size': 1 << 20,
        'cluster-size': 65536,
        'dirty-flag': false,
        'backing-filename': base,
        'backing-filename-format': 'qcow2',
        'format-specific': {
          type: 'qcow2',
          data: { compat: '1.1', 'compression-type': 'zlib', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false },
        },
        'backing-image': { filename: base, format: 'qcow2', 'virtual-size': 1 << 20 },
      },
    });
    const backing = queryNamedBlockNodes().find((n: { file: string; drv: string }) => n.file === base && n.drv === 'qcow2');
    expect(backing).toMatchObject({ ro: true, backing_file_depth: 0 });
    await blockdevDel('qtop');
  });

  it('refuses images with features qbd cannot handle, with a clear error', async () => {
    const img = path.join(dir, 'features.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    const fd = fs.openSync(img, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(1n << 40n);
    fs.writeSync(fd, b, 0, 8, 72);
    fs.closeSync(fd);
    await expect(blockdevAdd({ driver: 'qcow2', 'node-name': 'f1', file: { driver: 'file', filename: img } })).rejects.toThrow(
      /Unsupported qcow2 feature\(s\): Unknown incompatible feature: 10000000000/,
    );
    const ext = path.join(dir, 'extl2.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', ext, '1M');
    await expect(blockdevAdd({ driver: 'qcow2', 'node-name': 'f2', file: { driver: 'file', filename: ext } })).rejects.toThrow(/extended L2/);
    const notQcow = path.join(dir, 'plain.raw');
    fs.writeFileSync(notQcow, Buffer.alloc(4096));
    await expect(blockdevAdd({ driver: 'qcow2', 'node-name': 'f3', file: { driver: 'file', filename: notQcow } })).rejects.toThrow(/Image is not in qcow2 format/);
  });

  it('opens an image marked corrupt only read-only', async () => {
    const img = path.join(dir, 'corrupt.qcow2');
    qemuImg('create', '-f', 'qcow2', img, '1M');
    const fd = fs.openSync(img, 'r+');
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(2n);
    fs.writeSync(fd, b, 0, 8, 72);
    fs.closeSync(fd);
    await expect(blockdevAdd({ driver: 'qcow2', 'node-name': 'c1', file: { driver: 'file', filename: img } })).rejects.toThrow(
      'qcow2: Image is corrupt; cannot be opened read/write',
    );
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'c2', 'read-only': true, file: { driver: 'file', filename: img } });
    expect((await read('c2', 0, 4096)).every((x) => x === 0)).toBe(true);
    const info = queryNamedBlockNodes().find((n: { 'node-name': string }) => n['node-name'] === 'c2');
    expect(info.image['format-specific'].data.corrupt).toBe(true);
    await blockdevDel('c2');
  });
});
