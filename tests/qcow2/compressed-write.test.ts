/**
 * Compressed writes in the qcow2 driver (the path a job's `compress: true`
 * takes): whole clusters are stored compressed and packed together,
 * partial clusters and data that does not shrink are written normally,
 * overwriting a compressed cluster frees its bytes; every image checks
 * clean and holds exactly the data of a raw model.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { blockdevAdd, blockdevDel, check, closeAllNodes, expectClean, expectSameAs, getDefaultContext, qemuImg, read, stopAllContexts, write, writeModel } from './helpers';

const haveTools = toolAvailable('qemu-img');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-qcow2-compress-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

const pattern = (bytes: number, seed: number): Buffer => {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (seed + (i >> 9)) & 0xff;
  return b;
};

describe.skipIf(!haveTools)('qcow2 compressed writes', () => {
  for (const clusterSize of [512, 65536]) {
    it(`packs compressed clusters, falls back where it must, frees on overwrite (cluster size ${clusterSize})`, async () => {
      const cs = clusterSize;
      // One more cluster at the end: a partial one where the cluster is larger than a sector.
      const size = 64 * cs + Math.min(cs, 4096);
      const file = path.join(dir, `c${cs}.qcow2`);
      qemuImg('create', '-f', 'qcow2', '-o', `cluster_size=${cs}`, file, String(size));
      const node = `c${cs}`;
      await blockdevAdd({ driver: 'qcow2', 'node-name': node, file: { driver: 'file', filename: file } });
      const model = Buffer.alloc(size);
      const put = async (offset: number, data: Buffer, compressed = true): Promise<void> => {
        await write(node, offset, data, { compressed });
        data.copy(model, offset);
      };
      await put(0, pattern(8 * cs, 1));
      // Does not shrink: stored as a normal cluster.
      await put(8 * cs, crypto.randomBytes(cs));
      // Unaligned: the partial clusters are written normally, the whole one in between compressed.
      await put(10 * cs + 100, pattern(2 * cs, 7));
      // Overwrites compressed clusters, compressed and not.
      await put(2 * cs, pattern(2 * cs, 9));
      await put(4 * cs, pattern(cs, 11), false);
      // The last, partial cluster of the image.
      await put(64 * cs, pattern(size - 64 * cs, 13));
      expect(Buffer.compare(await read(node, 0, size), model)).toBe(0);
      await blockdevDel(node);
      expectClean(file);
      const model0 = path.join(dir, `c${cs}.raw`);
      writeModel(model0, model);
      expectSameAs(file, model0);
      const report = check(file).report as Record<string, number>;
      // Clusters 0-3, 5-7, 11 and the last are compressed.
      expect(report['compressed-clusters']).toBe(9);
    });
  }
});
