/**
 * Block jobs over QMP, qbd beside the reference: the same session against
 * both daemons must give the same transcript — replies, errors, events in
 * order, query-block-jobs and query-jobs shapes — and images that
 * `qemu-img compare` finds identical.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { both, compare, dirs, img, MiB, nodeNames } from '../helpers/job-session';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const SPARSE: Array<[number, number, number]> = [
  [0x11, 0, 4 * MiB],
  [0x22, 32 * MiB, MiB],
  [0x33, 63 * MiB, 64 * 1024],
];

const threeImages = (dir: string) => ({
  src: img(dir, 'src.raw', 64 * MiB, SPARSE),
  dst: img(dir, 'dst.raw', 64 * MiB, [[0x77, 8 * MiB, MiB]]),
  small: img(dir, 'small.raw', MiB),
});

describe.skipIf(!haveTools)('block jobs against qemu-storage-daemon 7.2', () => {
  it('mirror: READY, then block-job-complete; verbs refused in the states that refuse them; target identical', async () => {
    const r = await both(threeImages, async ({ t, dir }) => {
      await t.run('blockdev-mirror', { 'job-id': 'j1', device: 'src', target: 'dst', sync: 'full' });
      await t.until('BLOCK_JOB_READY');
      await t.run('query-block-jobs');
      await t.run('query-jobs');
      await t.run('block-job-finalize', { id: 'j1' });
      await t.run('block-job-dismiss', { id: 'j1' });
      await t.run('block-job-pause', { device: 'j1' });
      await t.run('query-block-jobs');
      await t.run('block-job-pause', { device: 'j1' });
      await t.run('block-job-complete', { device: 'j1' });
      await t.run('block-job-resume', { device: 'j1' });
      await t.until('BLOCK_JOB_COMPLETED');
      await t.run('block-job-resume', { device: 'j1' });
      await t.run('block-job-complete', { device: 'j1' });
      await t.run('query-block-jobs');
      await t.run('block-job-cancel', { device: 'j1' });
      await t.run('job-cancel', { id: 'j1' });
      expect(compare(path.join(dir, 'src.raw'), path.join(dir, 'dst.raw'))).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('mirror: block-job-cancel after READY ends as completed and leaves a consistent target', async () => {
    const r = await both(threeImages, async ({ t, c, dir }) => {
      await t.run('blockdev-mirror', { 'job-id': 'j2', device: 'src', target: 'dst', sync: 'full', 'auto-dismiss': false });
      await t.until('BLOCK_JOB_READY');
      await t.run('block-job-cancel', { device: 'j2' });
      await t.until('BLOCK_JOB_COMPLETED');
      await t.run('query-block-jobs');
      await t.run('block-job-dismiss', { id: 'j2' });
      await t.run('query-jobs');
      const graph = await c.cmd('x-debug-query-block-graph');
      expect(graph.nodes.map((n: any) => n.type)).not.toContain('block-job');
      expect(compare(path.join(dir, 'src.raw'), path.join(dir, 'dst.raw'))).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('mirror: pause, set-speed, resume and cancel while running at a limited speed', async () => {
    const r = await both(threeImages, async ({ t, c }) => {
      await t.run('blockdev-mirror', { 'job-id': 'm1', device: 'src', target: 'dst', sync: 'full', speed: MiB });
      await t.run('block-job-complete', { device: 'm1' });
      await t.run('job-complete', { id: 'm1' });
      await t.run('block-job-pause', { device: 'm1' });
      // The reference's job reaches its pause point once its request in flight is done.
      const paused = async () => ((await c.cmd('query-jobs')) as Array<{ status: string }>)[0]?.status === 'paused';
      for (let i = 0; i < 200 && !(await paused()); i++) await new Promise((res) => setTimeout(res, 20));
      await t.run('query-block-jobs');
      await t.run('query-jobs');
      await t.run('block-job-cancel', { device: 'm1' });
      await t.run('block-job-set-speed', { device: 'm1', speed: -1 });
      await t.run('block-job-set-speed', { device: 'm1', speed: 2 * MiB });
      await t.run('block-job-resume', { device: 'm1' });
      await t.run('block-job-cancel', { device: 'm1' });
      await t.until('BLOCK_JOB_CANCELLED');
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('mirror: refuses bad arguments with the reference words, and a speed below zero after creating the job', async () => {
    const r = await both(threeImages, async ({ t }) => {
      const base = { 'job-id': 'm2', device: 'src', target: 'dst', sync: 'full' };
      await t.run('blockdev-mirror', { ...base, device: 'nosuch' });
      await t.run('blockdev-mirror', { ...base, target: 'nosuch' });
      await t.run('blockdev-mirror', { ...base, target: 'src' });
      await t.run('blockdev-mirror', { ...base, sync: 'incremental' });
      await t.run('blockdev-mirror', { ...base, sync: 'bitmap' });
      await t.run('blockdev-mirror', { ...base, granularity: 1000 });
      await t.run('blockdev-mirror', { ...base, granularity: 256 });
      await t.run('blockdev-mirror', { ...base, 'buf-size': -1 });
      await t.run('blockdev-mirror', { ...base, replaces: 'nosuch' });
      await t.run('blockdev-mirror', { ...base, replaces: 'small' });
      await t.run('blockdev-mirror', { ...base, 'filter-node-name': 'src' });
      await t.run('blockdev-mirror', { ...base, 'job-id': 'bad id' });
      await t.run('blockdev-mirror', { ...base, speed: -1 });
      await t.run('blockdev-mirror', { ...base, target: 'small' });
      await t.until('BLOCK_JOB_COMPLETED');
      await t.run('query-jobs');
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('backup: point-in-time copy, the events of a job that pauses as it starts, and bad arguments', async () => {
    const r = await both(threeImages, async ({ t, dir }) => {
      const base = { 'job-id': 'b1', device: 'src', target: 'dst', sync: 'full' };
      await t.run('blockdev-backup', { ...base, sync: 'incremental' });
      await t.run('blockdev-backup', { ...base, sync: 'bitmap' });
      await t.run('blockdev-backup', { ...base, bitmap: 'bm0' });
      await t.run('blockdev-backup', { ...base, 'bitmap-mode': 'never' });
      await t.run('blockdev-backup', { ...base, target: 'small' });
      await t.run('blockdev-backup', { ...base, target: 'src' });
      await t.run('blockdev-backup', { ...base, compress: true });
      await t.run('blockdev-backup', base);
      await t.until('BLOCK_JOB_COMPLETED');
      await t.run('query-block-jobs');
      expect(compare(path.join(dir, 'src.raw'), path.join(dir, 'dst.raw'))).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('mirror: without auto-finalize, completed or soft-cancelled after READY, it waits in pending as the reference shows it', async () => {
    const r = await both(threeImages, async ({ t, dir }) => {
      for (const [id, end] of [['m2', 'job-complete'], ['m3', 'block-job-cancel']] as const) {
        await t.run('blockdev-mirror', { 'job-id': id, device: 'src', target: 'dst', sync: 'full', 'auto-finalize': false, 'auto-dismiss': false });
        await t.until('BLOCK_JOB_READY');
        await t.run('query-block-jobs');
        await t.run(end, end === 'job-complete' ? { id } : { device: id });
        await t.until('BLOCK_JOB_PENDING');
        await t.run('query-block-jobs');
        await t.run('query-jobs');
        await t.run('block-job-resume', { device: id });
        await t.run('job-finalize', { id });
        await t.until('BLOCK_JOB_COMPLETED');
        await t.run('query-block-jobs');
        await t.run('job-dismiss', { id });
      }
      expect(compare(path.join(dir, 'src.raw'), path.join(dir, 'dst.raw'))).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('backup: without auto-finalize it waits in pending (BLOCK_JOB_PENDING); cancel there, then dismiss', async () => {
    const r = await both(threeImages, async ({ t }) => {
      await t.run('blockdev-backup', { 'job-id': 'b2', device: 'src', target: 'dst', sync: 'full', 'auto-finalize': false, 'auto-dismiss': false });
      await t.until('BLOCK_JOB_PENDING');
      await t.run('query-block-jobs');
      await t.run('query-jobs');
      await t.run('block-job-complete', { device: 'b2' });
      await t.run('block-job-cancel', { device: 'b2' });
      await t.run('block-job-finalize', { id: 'b2' });
      await t.run('query-block-jobs');
      await t.run('query-jobs');
      await t.run('block-job-dismiss', { id: 'b2' });
      await t.run('query-block-jobs');
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('backup: sync=none lasts until cancelled; sync=top on a raw image copies everything', async () => {
    const r = await both(threeImages, async ({ t, dir }) => {
      await t.run('blockdev-backup', { 'job-id': 'b4', device: 'src', target: 'dst', sync: 'none' });
      await new Promise((res) => setTimeout(res, 200));
      await t.run('query-block-jobs');
      await t.run('block-job-cancel', { device: 'b4' });
      await t.until('BLOCK_JOB_CANCELLED');
      await t.run('blockdev-backup', { 'job-id': 'b5', device: 'src', target: 'dst', sync: 'top' });
      await t.until('BLOCK_JOB_COMPLETED');
      expect(compare(path.join(dir, 'src.raw'), path.join(dir, 'dst.raw'))).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('mirror and backup leave targets identical to fully allocated and to empty sparse sources', async () => {
    const dir = tempDir('qbd-jobs-alloc-');
    dirs.push(dir);
    const full = img(dir, 'full.raw', 16 * MiB, [[0x5a, 0, 16 * MiB]]);
    const empty = img(dir, 'empty.raw', 16 * MiB, [[0x03, 2 * MiB, 64 * 1024]]);
    const t1 = img(dir, 't1.raw', 16 * MiB, [[0x01, 0, MiB]]);
    const t2 = img(dir, 't2.raw', 16 * MiB);
    const t3 = img(dir, 't3.raw', 16 * MiB, [[0x02, 4 * MiB, MiB]]);
    const d = await startDaemon('qbd', [], { dir });
    const c = await d.client();
    try {
      for (const [n, f] of Object.entries({ full, empty, t1, t2, t3 })) await c.cmd('blockdev-add', { driver: 'raw', 'node-name': n, file: { driver: 'file', filename: f } });
      await c.cmd('blockdev-mirror', { 'job-id': 'a', device: 'full', target: 't1', sync: 'full' });
      await c.waitEvent('BLOCK_JOB_READY');
      await c.cmd('job-complete', { id: 'a' });
      await c.waitEvent('BLOCK_JOB_COMPLETED');
      await c.cmd('blockdev-mirror', { 'job-id': 'b', device: 'empty', target: 't2', sync: 'full' });
      await c.waitEvent('BLOCK_JOB_READY');
      await c.cmd('job-complete', { id: 'b' });
      await c.waitEvent('BLOCK_JOB_COMPLETED');
      await c.cmd('blockdev-backup', { 'job-id': 'c', device: 'full', target: 't3', sync: 'full' });
      await c.waitEvent('BLOCK_JOB_COMPLETED');
    } finally {
      c.close();
      expect(await d.stop()).toBe(0);
    }
    expect(compare(full, t1)).toBe(true);
    expect(compare(empty, t2)).toBe(true);
    expect(compare(full, t3)).toBe(true);
    // Holes of the source are skipped: the empty target holds only the source's 64 KiB of data.
    expect(fs.statSync(t2).blocks * 512).toBeLessThanOrEqual(128 * 1024);
  });

  it('backup keeps the start, mirror converges, while a client writes through an NBD export of the source', async () => {
    const dir = tempDir('qbd-jobs-nbd-');
    dirs.push(dir);
    const src = img(dir, 'src.raw', 64 * MiB, [[0x11, 0, 32 * MiB]]);
    const orig = path.join(dir, 'orig.raw');
    execFileSync('cp', ['--sparse=always', src, orig]);
    const bdst = img(dir, 'bdst.raw', 64 * MiB);
    const mdst = img(dir, 'mdst.raw', 64 * MiB);
    const d = await startDaemon('qbd', [], { dir });
    const c = await d.client();
    try {
      for (const [n, f] of Object.entries({ src, bdst, mdst })) await c.cmd('blockdev-add', { driver: 'raw', 'node-name': n, file: { driver: 'file', filename: f } });
      const sock = path.join(dir, 'nbd.sock');
      await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', writable: true });
      const write = (writes: string[]) =>
        execFileSync('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w]), `nbd+unix:///src?socket=${sock}`], { stdio: 'ignore' });
      // One job at a time: the reference refuses a mirror of a node under a backup's filter.
      await c.cmd('blockdev-backup', { 'job-id': 'b', device: 'src', target: 'bdst', sync: 'full', speed: 16 * MiB });
      write(['write -P 0x55 1M 2M', 'write -P 0x66 40M 1M', 'write -z 20M 1M']);
      await c.waitEvent('BLOCK_JOB_COMPLETED', 20_000);
      await c.cmd('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'mdst', sync: 'full' });
      write(['write -P 0x77 63M 64k', 'discard 8M 1M']);
      await c.waitEvent('BLOCK_JOB_READY', 20_000);
      await c.cmd('job-complete', { id: 'm' });
      await c.waitEvent('BLOCK_JOB_COMPLETED', 20_000);
      await c.cmd('block-export-del', { id: 'e' });
    } finally {
      c.close();
      expect(await d.stop()).toBe(0);
    }
    expect(compare(orig, bdst)).toBe(true);
    expect(compare(src, mdst)).toBe(true);
    expect(compare(src, orig)).toBe(false);
  });

  const canMount = process.getuid?.() === 0;
  it.skipIf(!canMount)('on-target-error=enospc stops the job (BLOCK_JOB_ERROR, io-status nospace); report fails it once', async () => {
    const tiny = tempDir('qbd-jobs-tiny-');
    dirs.push(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', tiny]);
    try {
      const images = (dir: string) => ({
        src: img(dir, 'src.raw', 16 * MiB, [[0x11, 0, 8 * MiB]]),
        dst: img(tiny, `${path.basename(dir)}.raw`, 16 * MiB),
      });
      const r = await both(images, async ({ t, c, dir }) => {
        await t.run('blockdev-mirror', { 'job-id': 'e1', device: 'src', target: 'dst', sync: 'full', 'on-target-error': 'enospc' });
        await t.until('BLOCK_JOB_ERROR');
        const paused = async () => ((await c.cmd('query-jobs')) as Array<{ status: string }>)[0]?.status === 'paused';
        for (let i = 0; i < 200 && !(await paused()); i++) await new Promise((res) => setTimeout(res, 20));
        await t.run('query-block-jobs');
        await t.run('block-job-cancel', { device: 'e1' });
        await t.run('block-job-cancel', { device: 'e1', force: true });
        await t.until('BLOCK_JOB_CANCELLED');
        const target = path.join(tiny, `${path.basename(dir)}.raw`);
        fs.rmSync(target);
        img(tiny, path.basename(target), 16 * MiB);
        await t.run('blockdev-backup', { 'job-id': 'e2', device: 'src', target: 'dst', sync: 'full' });
        await t.until('BLOCK_JOB_COMPLETED');
        fs.rmSync(target);
      }, (text) => nodeNames(text).replace(/"len":\d+/g, '"len":N'));
      // How many copies were in flight when the file system filled up is the daemon's business.
      const once = (events: string[]) => events.filter((e, i) => e !== events[i - 1]);
      expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
      expect(once(r.qbd.t.events)).toEqual(once(r.qsd.t.events));
    } finally {
      execFileSync('umount', [tiny]);
    }
  });

  it('quit and SIGTERM with a job running exit cleanly and leave no job behind', async () => {
    for (const how of ['quit', 'SIGTERM'] as const) {
      const dir = tempDir('qbd-jobs-exit-');
      dirs.push(dir);
      const src = img(dir, 'src.raw', 64 * MiB, SPARSE);
      const dst = img(dir, 'dst.raw', 64 * MiB);
      const d = await startDaemon('qbd', [], { dir });
      const c = await d.client();
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
      await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'dst', file: { driver: 'file', filename: dst } });
      await c.cmd('blockdev-mirror', { 'job-id': 'slow', device: 'src', target: 'dst', sync: 'full', speed: MiB });
      const exited = new Promise<number | null>((resolve) => d.proc.once('exit', (code) => resolve(code)));
      if (how === 'quit') await c.execute('quit');
      else d.proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 15_000))]);
      c.close();
      expect(code, how).toBe(0);
      expect(c.events.map((e: any) => e.event)).toContain('BLOCK_JOB_CANCELLED');
      expect(fs.existsSync(d.pidfile)).toBe(false);
    }
  });
});
