/**
 * Image fleecing as QEMU's documentation sets it up: a temporary qcow2
 * target whose backing file is the source, a copy-before-write node over
 * the source with that target, and a snapshot-access node over it exported
 * read-only. A client writes through an export of the copy-before-write
 * node; the fleecing export must still read the source as it was.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('nbdcopy') && toolAvailable('qemu-storage-daemon');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
const MiB = 1024 * 1024;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}

function identical(a: string, b: string): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-q', '-U', '-f', 'raw', '-F', 'raw', a, b]);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!haveTools)('image fleecing with copy-before-write and snapshot-access', () => {
  for (const flavour of ['qbd', 'qsd'] as const) {
    it(`${flavour}: the fleecing export keeps the point in time while writes go on through the filter`, async () => {
      const dir = tempDir(`qbd-fleece-${flavour}-`);
      dirs.push(dir);
      const src = `${dir}/src.raw`;
      run('qemu-img', ['create', '-q', '-f', 'raw', src, String(16 * MiB)]);
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 16M', '-c', 'write -P 0x22 1M 3M', src]);
      fs.copyFileSync(src, `${dir}/before.raw`);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src, '-F', 'raw', `${dir}/tmp.qcow2`]);
      const d = await startDaemon(flavour, [], { dir });
      try {
        const c = await d.client();
        await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tmp', file: { driver: 'file', filename: `${dir}/tmp.qcow2` }, backing: 'src' });
        const noBitmap = await c.execute('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tmp', bitmap: { node: 'src', name: 'b0' } });
        expect(noBitmap.error).toEqual({ class: 'GenericError', desc: "Dirty bitmap 'b0' not found" });
        await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tmp' });
        await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw' });
        await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/nbd.sock` } } });
        await c.cmd('block-export-add', { type: 'nbd', id: 'live', 'node-name': 'cbw', writable: true });
        await c.cmd('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece' });
        const live = `nbd+unix:///cbw?socket=${dir}/nbd.sock`;
        // Over the first cluster boundary, inside the old data, and a cluster in the middle.
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 2M', '-c', 'write -P 0x44 8M 64k', '-c', 'write -P 0x55 15M 1M', live]);
        if (flavour === 'qbd') run('qemu-io', ['-f', 'raw', '-c', 'write -z 12M 1M', live]);
        run('nbdcopy', [`nbd+unix:///fleece?socket=${dir}/nbd.sock`, `${dir}/fleece.raw`]);
        expect(identical(`${dir}/fleece.raw`, `${dir}/before.raw`)).toBe(true);
        // The writes reached the source.
        expect(identical(src, `${dir}/before.raw`)).toBe(false);
        expect(run('qemu-io', ['-r', '-f', 'raw', '-U', '-c', 'read -P 0x44 8M 64k', src])).not.toContain('mismatch');
        await c.cmd('block-export-del', { id: 'fleece' });
        await c.cmd('block-export-del', { id: 'live' });
        c.close();
      } finally {
        await d.stop();
      }
      execFileSync('qemu-img', ['check', '-q', `${dir}/tmp.qcow2`]);
    });
  }

  it('a discard on the snapshot gives its clusters up: no longer readable, no longer copied, freed in the target', async () => {
    const seen: Record<string, unknown> = {};
    for (const flavour of ['qsd', 'qbd'] as const) {
      const dir = tempDir(`qbd-fleece-discard-${flavour}-`);
      dirs.push(dir);
      const src = `${dir}/src.raw`;
      run('qemu-img', ['create', '-q', '-f', 'raw', src, String(4 * MiB)]);
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', src]);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src, '-F', 'raw', `${dir}/tmp.qcow2`]);
      const d = await startDaemon(flavour, [], { dir });
      try {
        const c = await d.client();
        await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tmp', discard: 'unmap', file: { driver: 'file', filename: `${dir}/tmp.qcow2` }, backing: 'src' });
        await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tmp' });
        await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw', discard: 'unmap' });
        await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/nbd.sock` } } });
        await c.cmd('block-export-add', { type: 'nbd', id: 'live', 'node-name': 'cbw', writable: true });
        await c.cmd('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece', writable: true });
        const live = `nbd+unix:///cbw?socket=${dir}/nbd.sock`;
        const fleece = `nbd+unix:///fleece?socket=${dir}/nbd.sock`;
        // Copied before the discard: the discard frees its copy.
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 3M 64k', live]);
        // Only whole clusters are given up (the reference 7.2 aborts on a discard that is not cluster-aligned).
        const discard = spawnText('qemu-io', ['-f', 'raw', '-c', 'discard 0 1M', '-c', 'discard 3M 64k', fleece]);
        const reads = ['0', '1M', '2M', '3M', '3136k'].map((at) => spawnText('qemu-io', ['-f', 'raw', '-c', `read ${at} 64k`, fleece]).split('\n')[0]);
        const map = spawnSync('nbdinfo', ['--map', fleece], { encoding: 'utf8' }).stderr.trim();
        const write = spawnText('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 1M 1M', fleece]).split('\n')[0];
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 4M', live]);
        if (flavour === 'qbd') {
          // A discard within one cluster gives nothing up; what was not given up still reads as it was.
          const kept = spawnText('qemu-io', ['-f', 'raw', '-c', 'discard 2000k 100k', '-c', 'read -P 0x11 1M 2M', '-c', 'read -P 0x11 3136k 960k', fleece]);
          expect(kept).not.toMatch(/mismatch|failed/);
        }
        for (const id of ['fleece', 'live']) await c.cmd('block-export-del', { id });
        for (const node of ['fleece', 'cbw', 'tmp']) await c.cmd('blockdev-del', { 'node-name': node });
        c.close();
        seen[flavour] = { discard, reads, map, write };
      } finally {
        await d.stop();
      }
      execFileSync('qemu-img', ['check', '-q', `${dir}/tmp.qcow2`]);
      // Given-up clusters hold nothing in the target: they read through to nothing (zero clusters over the backing file).
      const tmpMap = JSON.parse(run('qemu-img', ['map', '--output=json', `${dir}/tmp.qcow2`])) as Array<{ start: number; length: number; data: boolean; depth: number }>;
      const given = tmpMap.filter((e) => e.depth === 0 && !e.data).map((e) => [e.start, e.length]);
      expect(given, flavour).toEqual([
        [0, MiB],
        [3 * MiB, 64 * 1024],
      ]);
    }
    expect(JSON.stringify(seen.qbd).replace(/ \d.*?sec.*?ops\/sec\)/g, '')).toEqual(JSON.stringify(seen.qsd).replace(/ \d.*?sec.*?ops\/sec\)/g, ''));
  });

  for (const mode of ['break-guest-write', 'break-snapshot'] as const) {
    it(`on-cbw-error=${mode}: a failed copy fails what the reference fails`, async () => {
      const outcome: Record<string, { write: boolean; snapshot: boolean }> = {};
      for (const flavour of ['qsd', 'qbd'] as const) {
        const dir = tempDir(`qbd-cbw-error-${flavour}-`);
        dirs.push(dir);
        const src = `${dir}/src.raw`;
        run('qemu-img', ['create', '-q', '-f', 'raw', src, String(2 * MiB)]);
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 2M', src]);
        run('qemu-img', ['create', '-q', '-f', 'raw', `${dir}/tgt.raw`, String(8 * MiB)]);
        // The target window starts past the file size limit: every copy fails with EFBIG.
        const d = await startDaemon(flavour, [], { dir, fileSizeLimitKiB: 4096 });
        try {
          const c = await d.client();
          await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
          await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'tgt', offset: 6 * MiB, size: 2 * MiB, file: { driver: 'file', filename: `${dir}/tgt.raw` } });
          await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tgt', 'on-cbw-error': mode });
          await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw' });
          await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/nbd.sock` } } });
          await c.cmd('block-export-add', { type: 'nbd', id: 'live', 'node-name': 'cbw', writable: true });
          await c.cmd('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece' });
          const ok = (args: string[]) => !/error|failed/i.test(spawnText('qemu-io', args));
          const write = ok(['-f', 'raw', '-c', 'write -P 0x33 0 64k', `nbd+unix:///cbw?socket=${dir}/nbd.sock`]);
          const snapshot = ok(['-f', 'raw', '-r', '-c', 'read -P 0x11 0 64k', `nbd+unix:///fleece?socket=${dir}/nbd.sock`]);
          outcome[flavour] = { write, snapshot };
          c.close();
        } finally {
          await d.stop();
        }
      }
      expect(outcome.qbd).toEqual(outcome.qsd);
      expect(outcome.qbd).toEqual(mode === 'break-guest-write' ? { write: false, snapshot: true } : { write: true, snapshot: false });
    });
  }
});

function spawnText(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`;
}
