/**
 * Backup with dirty bitmaps: a full backup and incrementals into a chain of
 * qcow2 overlays rebuild the source exactly (qemu-img compare), each
 * incremental holding only the clusters written since the one before; and
 * the bitmap's fate for each bitmap-mode, after success and after an abort,
 * is the reference's.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { prng } from '../helpers/in-process-block';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { bitmapsByNode, both, hashes, qcow2Image, qemuIo, type Session } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img');
const MiB = 1 << 20;

async function backup(c: QmpTestClient, args: Json): Promise<Json> {
  await c.cmd('blockdev-backup', { 'job-id': 'j', device: 'src', ...args });
  const ev = await c.waitEvent('BLOCK_JOB_COMPLETED');
  return ev.data;
}

/** Bytes `qemu-img map` reports as data in the top layer of an image. */
function allocatedInTop(file: string): number {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', file], { encoding: 'utf8' })) as Json[];
  return map.filter((e) => e.depth === 0 && e.data).reduce((n, e) => n + e.length, 0);
}

describe.skipIf(!haveTools)('incremental backup with dirty bitmaps', () => {
  it('rebuilds the source from a full backup and incrementals in chained overlays', async () => {
    const work = tempDir('qbd-incremental-');
    const dir = tempDir('qbd-incremental-run-');
    const nbd = path.join(dir, 'nbd.sock');
    const d = await startDaemon('qbd', ['--nbd-server', `addr.type=unix,addr.path=${nbd}`], { dir });
    try {
      const c = await d.client();
      const s: Session = { c, d, work, nbd };
      const src = path.join(work, 'src.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', src, '32M']);
      execFileSync('qemu-io', ['-c', 'write -P 1 0 8M', '-c', 'write -P 2 20M 3M', src], { stdio: 'pipe' });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', writable: true });
      await c.cmd('block-dirty-bitmap-add', { node: 'src', name: 'b', granularity: 65536 });

      const images = [path.join(work, 'full.qcow2')];
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', images[0]!, '32M']);
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 't0', file: { driver: 'file', filename: images[0] } });
      // A full backup that also resets the bitmap, atomically with the job's start.
      expect(await backup(c, { target: 't0', sync: 'full', bitmap: 'b', 'bitmap-mode': 'on-success' })).not.toHaveProperty('error');
      await c.cmd('blockdev-del', { 'node-name': 't0' });
      expect((await bitmapsByNode(c)).src[0].count).toBe(0);

      const rand = prng(42);
      for (let i = 1; i <= 4; i++) {
        const writes: string[] = [];
        for (let k = 0; k < 12; k++) {
          const off = Math.floor(rand() * (32 * MiB - 200_000));
          const len = 1 + Math.floor(rand() * 150_000);
          writes.push(k % 5 === 4 ? `write -z ${off} ${len}` : `write -P ${(i * 16 + k) & 0xff} ${off} ${len}`);
        }
        qemuIo(s, 'src', ...writes);
        const dirty = (await bitmapsByNode(c)).src[0].count as number;
        const img = path.join(work, `inc${i}.qcow2`);
        execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', images[i - 1]!, '-F', 'qcow2', img]);
        images.push(img);
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': `t${i}`, backing: null, file: { driver: 'file', filename: img } });
        expect(await backup(c, { target: `t${i}`, sync: 'incremental', bitmap: 'b' })).not.toHaveProperty('error');
        await c.cmd('blockdev-del', { 'node-name': `t${i}` });
        // Only what the bitmap named was copied, and the bitmap starts again from nothing.
        expect(allocatedInTop(img)).toBeLessThanOrEqual(dirty);
        expect(allocatedInTop(img)).toBeGreaterThan(0);
        expect((await bitmapsByNode(c)).src[0].count).toBe(0);
      }
      await c.cmd('blockdev-del', { 'node-name': 'src' }).catch(() => undefined);
      await c.execute('quit');
      await d.stop();
      for (const img of images) execFileSync('qemu-img', ['check', '-q', img]);
      execFileSync('qemu-img', ['compare', '-q', src, images[images.length - 1]!]);
    } finally {
      await d.stop();
      fs.rmSync(work, { recursive: true, force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('leaves the bitmap as the reference does for each bitmap-mode, after success and after an abort', async () => {
    const { ours, theirs } = await both(async (s) => {
      const { c } = s;
      const out: Json[] = [];
      const cases: Array<[string, string, 'finalize' | 'cancel']> = [];
      for (const mode of ['on-success', 'never', 'always']) for (const end of ['finalize', 'cancel'] as const) cases.push(['bitmap', mode, end]);
      cases.push(['incremental', 'on-success', 'finalize'], ['full', 'on-success', 'cancel'], ['full', 'always', 'finalize']);
      const src = qcow2Image(s, 'src.qcow2', '8M');
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', writable: true });
      let n = 0;
      for (const [sync, mode, end] of cases) {
        const name = `b${n++}`;
        await c.cmd('block-dirty-bitmap-add', { node: 'src', name, granularity: 4096 });
        qemuIo(s, 'src', `write -P ${n} ${n * 100_000} 70000`, `write -z ${3 * MiB + n * 8192} 4096`);
        const tgt = qcow2Image(s, `t${n}.qcow2`, '8M');
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 't', file: { driver: 'file', filename: tgt } });
        const args: Json = { 'job-id': 'j', device: 'src', target: 't', sync, bitmap: name, 'auto-finalize': false };
        if (sync !== 'incremental') args['bitmap-mode'] = mode;
        const started = await c.execute('blockdev-backup', args);
        if (started.error) {
          out.push([sync, mode, end, started]);
        } else {
          await c.waitEvent('BLOCK_JOB_PENDING');
          const during = (await bitmapsByNode(c)).src.filter((b: Json) => b.name === name);
          // Written while the job waits: the successor records it.
          qemuIo(s, 'src', `write -P 99 ${5 * MiB} 8192`);
          await c.cmd(end === 'finalize' ? 'job-finalize' : 'job-cancel', { id: 'j' });
          await c.waitEvent(end === 'finalize' ? 'BLOCK_JOB_COMPLETED' : 'BLOCK_JOB_CANCELLED');
          await c.cmd('job-dismiss', { id: 'j' }).catch(() => undefined);
          out.push([sync, mode, end, during, (await bitmapsByNode(c)).src.filter((b: Json) => b.name === name), await hashes(c, [['src', name]])]);
        }
        await c.cmd('blockdev-del', { 'node-name': 't' });
        await c.cmd('block-dirty-bitmap-remove', { node: 'src', name }).catch(() => undefined);
      }
      return out;
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    // Not two empty answers: the frozen bitmap was busy while the job waited, and abort kept more than success.
    const counts = (sync: string, mode: string, end: string): number => ours.find((r: Json) => r[0] === sync && r[1] === mode && r[2] === end)[4][0].count;
    expect(ours.find((r: Json) => r[0] === 'bitmap')[3][0].busy).toBe(true);
    expect(counts('bitmap', 'on-success', 'cancel')).toBeGreaterThan(counts('bitmap', 'on-success', 'finalize'));
    expect(counts('bitmap', 'never', 'finalize')).toBe(counts('bitmap', 'never', 'cancel'));
  });
});
