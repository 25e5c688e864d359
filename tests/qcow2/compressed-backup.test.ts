/**
 * blockdev-backup with `compress: true` onto qcow2, qbd beside
 * qemu-storage-daemon: the same refusal for a target that cannot compress,
 * and a target that `qemu-img check` finds clean, with as many compressed
 * clusters as the reference writes, identical to the source.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { qemuImg, qemuIo } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-compress-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveTools)('compressed backup onto qcow2', () => {
  it('writes compressed clusters the reference counts alike; the copy checks clean and equals the source', async () => {
    const src = path.join(dir, 'src.qcow2');
    const random = path.join(dir, 'random.bin');
    qemuImg('create', '-f', 'qcow2', src, '4M');
    qemuIo(src, 'write -P 0x5a 0 1M', 'write -P 0x11 2M 100k');
    // Data that does not shrink is written uncompressed.
    fs.writeFileSync(random, crypto.randomBytes(128 * 1024));
    qemuIo(src, `write -s ${random} 3M 128k`);
    const results: Json[] = [];
    for (const flavour of ['qbd', 'qsd'] as const) {
      const tgt = path.join(dir, `tgt-${flavour}.qcow2`);
      const raw = path.join(dir, `tgt-${flavour}.raw`);
      qemuImg('create', '-f', 'qcow2', tgt, '4M');
      qemuImg('create', '-f', 'raw', raw, '4M');
      const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-compress-${flavour}-`) });
      let refusal: Json;
      try {
        const c = await d.client();
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', 'read-only': true, file: { driver: 'file', filename: src } });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: tgt } });
        await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'raw', file: { driver: 'file', filename: raw } });
        refusal = (await c.execute('blockdev-backup', { 'job-id': 'r', device: 'src', target: 'raw', sync: 'full', compress: true })).error;
        await c.cmd('blockdev-backup', { 'job-id': 'j', device: 'src', target: 'tgt', sync: 'full', compress: true });
        const done = await c.waitEvent('BLOCK_JOB_COMPLETED');
        expect(done.data.error).toBeUndefined();
      } finally {
        await d.stop();
      }
      const check = JSON.parse(qemuImg('check', '--output=json', tgt));
      qemuImg('compare', src, tgt);
      // Where clusters land on the host (end offset, fragmentation) is the allocator's business, not compression's.
      results.push({ refusal, check: { ...check, filename: 'tgt', 'image-end-offset': undefined, 'fragmented-clusters': undefined } });
    }
    expect(results[0].check['compressed-clusters']).toBeGreaterThan(0);
    expect(results[0].check['check-errors']).toBe(0);
    expect(structuralDiff(normalise(results[0], dir), normalise(results[1], dir), '$', true)).toEqual([]);
  });
});
