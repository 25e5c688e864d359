/**
 * Persistent bitmaps in qcow2 images, qbd beside qemu-storage-daemon:
 * bitmaps qemu-img made load with the same bits; bitmaps the daemon stores
 * read back alike in qemu-img, in the other daemon, and after a restart;
 * a daemon killed while bitmaps were in use leaves them inconsistent,
 * refused for use and removable; every image stays clean for qemu-img check.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { deleteExport } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { bitmapsByNode, bothWithRestarts, checkImage, hashes, imageInfo, qemuIo, type Session } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img');

function img(...args: string[]): void {
  execFileSync('qemu-img', args, { stdio: 'pipe' });
}

async function openImage(s: Session, file: string, readOnly = false, exported = !readOnly): Promise<void> {
  await s.c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'q', 'read-only': readOnly, file: { driver: 'file', filename: file } });
  if (exported) await exportImage(s);
}

function exportImage(s: Session): Promise<void> {
  return s.c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'q', writable: true });
}

async function quit(s: Session): Promise<void> {
  await s.c.execute('quit');
  await s.d.stop();
}

/** A daemon of `flavour` with an NBD server, its runtime files in a directory of its own. */
async function session(flavour: 'qbd' | 'qsd', work: string): Promise<Session> {
  const dir = tempDir('qbd-bitmaps-run-');
  const nbd = path.join(dir, 'nbd.sock');
  const d = await startDaemon(flavour, ['--nbd-server', `addr.type=unix,addr.path=${nbd}`], { dir });
  return { c: await d.client(), d, work, nbd };
}

const ALL = (names: string[]): Array<[string, string]> => names.map((n) => ['q', n]);

describe.skipIf(!haveTools)('persistent dirty bitmaps in qcow2', () => {
  it('loads bitmaps made by qemu-img with the bits qemu-io writes set, and stores them back', async () => {
    const { ours, theirs } = await bothWithRestarts(async (r) => {
      const file = path.join(r.work, 'p.qcow2');
      img('create', '-q', '-f', 'qcow2', file, '10M');
      img('bitmap', '--add', file, 'b0');
      img('bitmap', '--add', '-g', '4096', file, 'b1');
      img('bitmap', '--add', '--disable', file, 'b2');
      execFileSync('qemu-io', ['-c', 'write 0 100k', '-c', 'write 5M 4k', '-c', 'write -z 7M 256k', file], { stdio: 'pipe' });
      const s = await r.start();
      await openImage(s, file);
      const loaded = { bitmaps: await bitmapsByNode(s.c), hashes: await hashes(s.c, ALL(['b0', 'b1', 'b2'])) };
      await s.c.cmd('block-dirty-bitmap-add', { node: 'q', name: 'new', persistent: true, granularity: 8192 });
      qemuIo(s, 'q', 'write 1M 64k', 'write 9000k 3k');
      const inUse = imageInfo(file, true)['format-specific'].data.bitmaps;
      const before = await hashes(s.c, ALL(['b0', 'b1', 'b2', 'new']));
      await quit(s);
      const stored = imageInfo(file)['format-specific'].data.bitmaps;
      const check = checkImage(file);
      // Reopened: the same bits as before the restart.
      const again = await r.start();
      await openImage(again, file);
      const reloaded = { bitmaps: await bitmapsByNode(again.c), hashes: await hashes(again.c, ALL(['b0', 'b1', 'b2', 'new'])) };
      await quit(again);
      return { loaded, inUse, before, stored, check, reloaded };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.reloaded.hashes).toEqual(ours.before);
    expect(ours.check['check-errors']).toBe(0);
    expect(ours.loaded.bitmaps.q.find((b: Json) => b.name === 'b0').count).toBeGreaterThan(0);
  });

  it('hands stored bitmaps from one daemon to the other with the same bits, both ways', async () => {
    for (const [writer, reader] of [['qbd', 'qsd'], ['qsd', 'qbd']] as const) {
      const work = tempDir('qbd-bitmaps-handover-');
      try {
        const file = path.join(work, 'x.qcow2');
        img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '64M');
        const a = await session(writer, work);
        await openImage(a, file);
        await a.c.cmd('block-dirty-bitmap-add', { node: 'q', name: 'a', persistent: true });
        await a.c.cmd('block-dirty-bitmap-add', { node: 'q', name: 'fine', persistent: true, granularity: 512, disabled: true });
        await a.c.cmd('block-dirty-bitmap-enable', { node: 'q', name: 'fine' });
        qemuIo(a, 'q', 'write 0 1', 'write 10M 3M', 'write 63M 1M', 'write -z 20M 8k');
        const written = { bitmaps: await bitmapsByNode(a.c), hashes: await hashes(a.c, ALL(['a', 'fine'])) };
        await quit(a);
        expect(checkImage(file)['check-errors'], `${writer} left errors`).toBe(0);
        const b = await session(reader, work);
        await openImage(b, file);
        const read = { bitmaps: await bitmapsByNode(b.c), hashes: await hashes(b.c, ALL(['a', 'fine'])) };
        await quit(b);
        // A reload lists the directory's bitmaps newest first, so order may change (it does in QEMU too).
        const byName = (list: Json[]) => [...list].sort((x, y) => String(x.name).localeCompare(String(y.name)));
        expect({ ...read, bitmaps: byName(read.bitmaps.q) }, `${reader} reading what ${writer} stored`).toEqual({ ...written, bitmaps: byName(written.bitmaps.q) });
        expect(written.bitmaps.q[0].count).toBeGreaterThan(0);
      } finally {
        fs.rmSync(work, { recursive: true, force: true });
      }
    }
  });

  it('leaves bitmaps in use after kill -9: inconsistent on reopen, refused for use, removable', async () => {
    const { ours, theirs } = await bothWithRestarts(async (r) => {
      const file = path.join(r.work, 'k.qcow2');
      img('create', '-q', '-f', 'qcow2', file, '10M');
      img('bitmap', '--add', file, 'b0');
      img('bitmap', '--add', file, 'b1');
      const s = await r.start();
      await openImage(s, file);
      qemuIo(s, 'q', 'write 1M 64k');
      s.d.proc.kill('SIGKILL');
      await s.d.stop();
      const afterKill = imageInfo(file)['format-specific'].data.bitmaps;
      const checkAfterKill = checkImage(file)['check-errors'];
      const again = await r.start();
      await openImage(again, file);
      const c = again.c;
      const replies: Json[] = [];
      replies.push(await bitmapsByNode(c));
      replies.push(await c.execute('block-dirty-bitmap-clear', { node: 'q', name: 'b0' }));
      replies.push(await c.execute('block-dirty-bitmap-enable', { node: 'q', name: 'b0' }));
      replies.push(await c.execute('block-dirty-bitmap-disable', { node: 'q', name: 'b0' }));
      replies.push(await c.execute('block-dirty-bitmap-merge', { node: 'q', target: 'b0', bitmaps: ['b1'] }));
      replies.push(await c.execute('block-dirty-bitmap-add', { node: 'q', name: 'c' }));
      replies.push(await c.execute('block-dirty-bitmap-merge', { node: 'q', target: 'c', bitmaps: ['b1'] }));
      replies.push(await c.execute('block-dirty-bitmap-add', { node: 'q', name: 'b0', persistent: true }));
      replies.push(await c.execute('block-dirty-bitmap-remove', { node: 'q', name: 'b0' }));
      const afterRemove = imageInfo(file, true)['format-specific'].data.bitmaps;
      await quit(again);
      return { afterKill, checkAfterKill, replies, afterRemove, afterQuit: imageInfo(file)['format-specific'].data.bitmaps, check: checkImage(file) };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.replies[0].q.every((b: Json) => b.inconsistent === true)).toBe(true);
  });

  it('makes the bitmaps of a read-only image read-only, as the reference does', async () => {
    const { ours, theirs } = await bothWithRestarts(async (r) => {
      const file = path.join(r.work, 'ro.qcow2');
      img('create', '-q', '-f', 'qcow2', file, '10M');
      img('bitmap', '--add', file, 'b0');
      execFileSync('qemu-io', ['-c', 'write 0 1M', file], { stdio: 'pipe' });
      const s = await r.start();
      await openImage(s, file, true);
      const c = s.c;
      const out = [
        await bitmapsByNode(c),
        await c.execute('block-dirty-bitmap-clear', { node: 'q', name: 'b0' }),
        await c.execute('block-dirty-bitmap-disable', { node: 'q', name: 'b0' }),
        await c.execute('block-dirty-bitmap-add', { node: 'q', name: 'p', persistent: true }),
        await c.execute('block-dirty-bitmap-remove', { node: 'q', name: 'b0' }),
        await hashes(c, ALL(['b0'])),
      ];
      await quit(s);
      return { out, after: imageInfo(file)['format-specific'].data.bitmaps };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('grows bitmaps with block_resize, new chunks clean, and stores them at the new size', async () => {
    const { ours, theirs } = await bothWithRestarts(async (r) => {
      const file = path.join(r.work, 'rs.qcow2');
      img('create', '-q', '-f', 'qcow2', file, '10M');
      img('bitmap', '--add', file, 'old');
      const s = await r.start();
      await openImage(s, file, false, false);
      await s.c.cmd('block-dirty-bitmap-add', { node: 'q', name: 'p', persistent: true });
      await s.c.cmd('block-dirty-bitmap-add', { node: 'q', name: 't', granularity: 512 });
      // Bits set before the resize stay; the export goes while the node grows (it does not share resize).
      await exportImage(s);
      qemuIo(s, 'q', 'write 9M 1M');
      await deleteExport(s.c, 'e');
      await s.c.cmd('block_resize', { 'node-name': 'q', size: 20 << 20 });
      await exportImage(s);
      qemuIo(s, 'q', 'write 15M 64k');
      const grown = { bitmaps: await bitmapsByNode(s.c), hashes: await hashes(s.c, ALL(['old', 'p', 't'])) };
      await quit(s);
      const again = await r.start();
      await openImage(again, file);
      const reloaded = await hashes(again.c, ALL(['old', 'p']));
      await quit(again);
      return { grown, reloaded, stored: imageInfo(file)['format-specific'].data.bitmaps, check: checkImage(file) };
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.reloaded['q/p']).toEqual(ours.grown.hashes['q/p']);
  });

  it('refuses images whose bitmap directory is damaged, with the reference errors', async () => {
    /** Patches the image's bitmaps extension (at `ext`) or its first directory entry (at `dir`). */
    const damages: Array<(img: Buffer, ext: number, dir: number) => void> = [
      (b, _e, d) => b.writeBigUInt64BE(BigInt(12345 * 512), d),
      (b, _e, d) => b.writeBigUInt64BE(BigInt(65536 + 512), d),
      (b, _e, d) => (b[d + 17] = 40),
      (b, e) => b.writeUInt32BE(0, e),
      (b, _e, d) => b.writeUInt32BE(7, d + 8),
      (b, _e, d) => (b[d + 16] = 2),
      (b, _e, d) => b.writeUInt32BE(8, d + 12),
    ];
    const { ours, theirs } = await bothWithRestarts(async (r) => {
      const s = await r.start();
      const out: Json[] = [];
      for (const [i, damage] of damages.entries()) {
        const file = path.join(r.work, `bad${i}.qcow2`);
        img('create', '-q', '-f', 'qcow2', file, '10M');
        img('bitmap', '--add', file, 'b0');
        const b = fs.readFileSync(file);
        let at = b.readUInt32BE(100);
        while (b.readUInt32BE(at) !== 0x23852875) at += 8 + ((b.readUInt32BE(at + 4) + 7) & ~7);
        damage(b, at + 8, Number(b.readBigUInt64BE(at + 24)));
        fs.writeFileSync(file, b);
        out.push(await s.c.execute('blockdev-add', { driver: 'qcow2', 'node-name': `q${i}`, file: { driver: 'file', filename: file } }));
      }
      await quit(s);
      return out;
    });
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
    expect(ours.every((r: Json) => r.error)).toBe(true);
  });
});
