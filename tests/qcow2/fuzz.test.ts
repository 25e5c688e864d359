/**
 * Hostile images: a bounded fuzzer mutates the header, L1 and L2 tables and
 * refcount structures of valid images. Opening, reading, block status and
 * writing must end in data or an error — never a crash, a hang, or a broken
 * I/O context.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { blockdevAdd, blockdevDel, closeAllNodes, findNode, getDefaultContext, prng, qemuImg, qemuIo, read, request, stopAllContexts, write } from './helpers';

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-qcow2-fuzz-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Where the metadata of an image lives, from its header. */
function metadataRegions(img: Buffer): Array<[number, number]> {
  const cs = 2 ** img.readUInt32BE(20);
  const regions: Array<[number, number]> = [[0, Math.min(cs, 512)]];
  const l1 = Number(img.readBigUInt64BE(40));
  const l1Size = img.readUInt32BE(36);
  regions.push([l1, l1Size * 8]);
  const rt = Number(img.readBigUInt64BE(48));
  regions.push([rt, 64]);
  const firstRefblock = Number(img.readBigUInt64BE(rt) & ~511n);
  if (firstRefblock) regions.push([firstRefblock, 256]);
  const firstL2 = Number(img.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  if (firstL2) regions.push([firstL2, 512]);
  return regions.filter(([off, len]) => len > 0 && off + len <= img.length);
}

function mutate(base: Buffer, rnd: () => number): Buffer {
  const img = Buffer.from(base);
  const regions = metadataRegions(base);
  const n = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < n; k++) {
    // The header is mutated a quarter of the time: most header damage fails the open, table damage the I/O.
    const pick = rnd() < 0.25 || regions.length === 1 ? 0 : 1 + Math.floor(rnd() * (regions.length - 1));
    const [off, len] = regions[pick]!;
    const at = off + Math.floor(rnd() * len);
    const how = rnd();
    if (how < 0.5) img[at] = Math.floor(rnd() * 256);
    else if (how < 0.75) img[at] ^= 1 << Math.floor(rnd() * 8);
    else if (at + 8 <= img.length) {
      // Whole 64-bit fields set to large or odd values.
      const aligned = at - (at % 8);
      const values = [0n, 1n, 0xffffffffffffffffn, 1n << 62n, BigInt(Math.floor(rnd() * 2 ** 40)), BigInt(img.length + 512)];
      img.writeBigUInt64BE(values[Math.floor(rnd() * values.length)]!, aligned);
    }
  }
  return img;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: ${what}`)), ms);
    }),
  ]);
}

describe.skipIf(!toolAvailable('qemu-img'))('hostile qcow2 images', () => {
  it('give errors, never a crash or a hang, for mutated headers, L1/L2 tables and refcounts', async () => {
    const sources: Buffer[] = [];
    for (const [name, opts] of [
      ['plain', 'cluster_size=4096'],
      ['rb1', 'cluster_size=512,refcount_bits=1'],
    ] as const) {
      const f = path.join(dir, `${name}.qcow2`);
      qemuImg('create', '-f', 'qcow2', '-o', opts, f, '1M');
      qemuIo(f, 'write -P 7 0 300k', 'write -z 400k 64k', 'write -P 9 700k 10k');
      sources.push(fs.readFileSync(f));
    }
    const raw = path.join(dir, 'comp.raw');
    fs.writeFileSync(raw, Buffer.alloc(1 << 20, 3));
    const comp = path.join(dir, 'comp.qcow2');
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, comp);
    sources.push(fs.readFileSync(comp));

    const rnd = prng(2024);
    let opened = 0;
    let failed = 0;
    for (let i = 0; i < 120; i++) {
      const img = path.join(dir, `fuzz-${i}.qcow2`);
      fs.writeFileSync(img, mutate(sources[i % sources.length]!, rnd));
      const writable = i % 3 === 0;
      const name = `fz${i}`;
      try {
        await withTimeout(blockdevAdd({ driver: 'qcow2', 'node-name': name, 'read-only': !writable, file: { driver: 'file', filename: img } }), 5000, `open ${i}`);
      } catch (err) {
        if ((err as Error).message.startsWith('hang')) throw err;
        failed++;
        continue;
      }
      opened++;
      const len = Math.min(findNode(name).length as number, 2 << 20);
      const ops: Array<() => Promise<unknown>> = [
        () => read(name, 0, len),
        () => request(name, { op: 'block-status', offset: 0, bytes: len }),
      ];
      if (writable && len > 70_000) ops.push(() => write(name, 1000, Buffer.alloc(70_000, 1)), () => request(name, { op: 'flush' }));
      for (const op of ops) {
        try {
          await withTimeout(op(), 5000, `I/O on image ${i}`);
        } catch (err) {
          if ((err as Error).message.startsWith('hang')) throw err;
        }
      }
      await withTimeout(blockdevDel(name), 5000, `close ${i}`).catch((err: Error) => {
        if (process.env.QBD_FUZZ_DEBUG) console.log(i, err.message);
        if (err.message.startsWith('hang')) throw err;
      });
    }
    // Both paths were exercised, and the I/O context still serves a good image.
    expect(opened).toBeGreaterThan(10);
    expect(failed).toBeGreaterThan(3);
    const good = path.join(dir, 'good.qcow2');
    fs.writeFileSync(good, sources[0]!);
    await blockdevAdd({ driver: 'qcow2', 'node-name': 'good', 'read-only': true, file: { driver: 'file', filename: good } });
    expect((await read('good', 0, 4096)).every((b) => b === 7)).toBe(true);
    await blockdevDel('good');
  });
});
