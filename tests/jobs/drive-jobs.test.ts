/**
 * drive-backup and drive-mirror against qemu-storage-daemon 7.2: the target
 * image created (or opened, mode existing) from a filename, the same
 * replies and errors, the same events per job, and images that qemu-img
 * finds clean and equal to the source.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { both, dirs, jobEvents, MiB, type Session } from '../helpers/job-session';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A qcow2 chain (base with 1 MiB of data, top with another MiB) and a full raw image. */
function chain(dir: string): Record<string, string> {
  const q = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
  q('qemu-img', 'create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(8 * MiB));
  q('qemu-io', '-c', 'write -P 3 0 1M', `${dir}/base.qcow2`);
  q('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', `${dir}/base.qcow2`, '-F', 'qcow2', `${dir}/top.qcow2`);
  q('qemu-io', '-c', 'write -P 4 2M 1M', `${dir}/top.qcow2`);
  q('qemu-img', 'create', '-q', '-f', 'raw', `${dir}/r.raw`, String(8 * MiB));
  q('qemu-io', '-f', 'raw', '-c', 'write -P 5 0 8M', `${dir}/r.raw`);
  return { r: `${dir}/r.raw` };
}

function info(file: string): Record<string, unknown> {
  const i = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', file], { encoding: 'utf8' }));
  return { format: i.format, size: i['virtual-size'], backing: i['backing-filename'] };
}

function same(a: string, b: string): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-q', '-U', a, b]);
    return true;
  } catch {
    return false;
  }
}

function clean(file: string): boolean {
  try {
    execFileSync('qemu-img', ['check', '-q', '-U', file]);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!haveTools)('drive-backup and drive-mirror against qemu-storage-daemon 7.2', () => {
  it('create the target image or open an existing one, with the reference replies and errors', async () => {
    const results: Record<string, Record<string, unknown>> = {};
    const r = await both(chain, async ({ t, c, dir, daemon }: Session) => {
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: `${dir}/top.qcow2` } });
      await t.run('drive-backup', { 'job-id': 'b0', device: 'nosuch', target: `${dir}/x.qcow2`, sync: 'full' });
      await t.run('drive-backup', { 'job-id': 'b0', device: 'top', target: `${dir}/nodir/x.qcow2`, sync: 'full' });
      await t.run('drive-backup', { 'job-id': 'b0', device: 'top', target: `${dir}/nosuch.qcow2`, sync: 'full', mode: 'existing' });
      await t.run('drive-backup', { 'job-id': 'b0', device: 'top', target: `${dir}/x.qcow2`, sync: 'full', format: 'nosuchfmt' });
      await t.run('drive-backup', { 'job-id': 'b1', device: 'top', target: `${dir}/full.qcow2`, sync: 'full' });
      await t.until('BLOCK_JOB_COMPLETED', 1);
      await t.run('drive-backup', { 'job-id': 'b2', device: 'top', target: `${dir}/top-b.qcow2`, sync: 'top' });
      await t.until('BLOCK_JOB_COMPLETED', 2);
      await t.run('drive-backup', { 'job-id': 'b3', device: 'r', target: `${dir}/r-b.raw`, sync: 'full' });
      await t.until('BLOCK_JOB_COMPLETED', 3);
      await t.run('drive-backup', { 'job-id': 'b4', device: 'r', target: `${dir}/r-q.qcow2`, sync: 'full', format: 'qcow2' });
      await t.until('BLOCK_JOB_COMPLETED', 4);
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', `${dir}/existing.raw`, String(8 * MiB)]);
      await t.run('drive-backup', { 'job-id': 'b5', device: 'r', target: `${dir}/existing.raw`, sync: 'full', mode: 'existing' });
      await t.until('BLOCK_JOB_COMPLETED', 5);
      await t.run('drive-mirror', { 'job-id': 'm0', device: 'nosuch', target: `${dir}/m.qcow2`, sync: 'full' });
      await t.run('drive-mirror', { 'job-id': 'm1', device: 'top', target: `${dir}/m.qcow2`, sync: 'full' });
      await t.until('BLOCK_JOB_READY', 1);
      await t.run('block-job-complete', { device: 'm1' });
      await t.until('BLOCK_JOB_COMPLETED', 6);
      await t.run('drive-mirror', { 'job-id': 'm2', device: 'r', target: `${dir}/m2.raw`, sync: 'full', format: 'raw', 'node-name': 'newr' });
      await t.until('BLOCK_JOB_READY', 2);
      await t.run('block-job-cancel', { device: 'm2' });
      await t.until('BLOCK_JOB_COMPLETED', 7);
      // After the pivot the new image serves as `top`'s replacement; the cancelled mirror's target is closed.
      const names = ((await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string }>).map((n) => n['node-name']).filter((n) => !n.startsWith('#'));
      expect(names.sort()).toEqual(['r', 'top']);
      const found: Record<string, unknown> = {};
      for (const f of ['full.qcow2', 'top-b.qcow2', 'r-b.raw', 'r-q.qcow2', 'm.qcow2', 'm2.raw']) {
        const i = info(`${dir}/${f}`);
        found[f] = { ...i, backing: typeof i.backing === 'string' ? i.backing.replace(dir, 'DIR') : i.backing };
        if (f.endsWith('.qcow2')) expect(clean(`${dir}/${f}`), f).toBe(true);
      }
      results[daemon.flavour] = found;
      expect(same(`${dir}/top.qcow2`, `${dir}/full.qcow2`)).toBe(true);
      expect(same(`${dir}/top.qcow2`, `${dir}/top-b.qcow2`)).toBe(true);
      expect(same(`${dir}/r.raw`, `${dir}/r-b.raw`)).toBe(true);
      expect(same(`${dir}/r.raw`, `${dir}/r-q.qcow2`)).toBe(true);
      expect(same(`${dir}/r.raw`, `${dir}/existing.raw`)).toBe(true);
      expect(same(`${dir}/top.qcow2`, `${dir}/m.qcow2`)).toBe(true);
      expect(same(`${dir}/r.raw`, `${dir}/m2.raw`)).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(results.qbd).toEqual(results.qsd);
    for (const job of ['b1', 'b2', 'b3', 'b4', 'b5', 'm1', 'm2']) expect(jobEvents(r.qbd.t.events, job), job).toEqual(jobEvents(r.qsd.t.events, job));
  });

  it('drive-backup works as a transaction action', async () => {
    const r = await both(chain, async ({ t, dir }: Session) => {
      await t.run('transaction', {
        actions: [
          { type: 'drive-backup', data: { 'job-id': 'd1', device: 'r', target: `${dir}/t1.raw`, sync: 'full' } },
          { type: 'drive-backup', data: { 'job-id': 'd2', device: 'r', target: `${dir}/t2.qcow2`, sync: 'full', format: 'qcow2' } },
        ],
      });
      await t.until('BLOCK_JOB_COMPLETED', 2);
      expect(same(`${dir}/r.raw`, `${dir}/t1.raw`)).toBe(true);
      expect(same(`${dir}/r.raw`, `${dir}/t2.qcow2`)).toBe(true);
      expect(clean(`${dir}/t2.qcow2`)).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    for (const job of ['d1', 'd2']) expect(jobEvents(r.qbd.t.events, job)).toEqual(jobEvents(r.qsd.t.events, job));
  });

  for (const sync of ['top', 'none'] as const) {
    it(`drive-mirror sync=${sync}: after the pivot an export of the source reads the same data through the new image`, async () => {
      const r = await both(chain, async ({ t, c, dir }: Session) => {
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: `${dir}/top.qcow2` } });
        await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/nbd.sock` } } });
        await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'top', writable: true });
        const uri = `nbd+unix:///top?socket=${dir}/nbd.sock`;
        execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, `${dir}/before.raw`]);
        await t.run('drive-mirror', { 'job-id': 'm', device: 'top', target: `${dir}/new.qcow2`, sync });
        // Written while the job runs: must reach the new image too.
        execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 9 5M 64k', uri], { stdio: 'ignore' });
        execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 9 5M 64k', `${dir}/before.raw`], { stdio: 'ignore' });
        await t.until('BLOCK_JOB_READY');
        await t.run('block-job-complete', { device: 'm' });
        await t.until('BLOCK_JOB_COMPLETED');
        execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, `${dir}/after.raw`]);
        expect(same(`${dir}/before.raw`, `${dir}/after.raw`)).toBe(true);
        // The export now writes the new image, which reads the rest through its backing chain.
        execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 6M 64k', uri], { stdio: 'ignore' });
        execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 6M 64k', `${dir}/after.raw`], { stdio: 'ignore' });
        await c.cmd('block-export-del', { id: 'e' });
        await t.run('query-block-exports');
        expect(same(`${dir}/new.qcow2`, `${dir}/after.raw`)).toBe(true);
        expect(same(`${dir}/top.qcow2`, `${dir}/before.raw`)).toBe(true);
        const backing = info(`${dir}/new.qcow2`).backing as string;
        // sync=top: the source's backing file; sync=none: the source itself.
        expect(backing.replace(dir, 'DIR')).toBe(sync === 'top' ? 'DIR/base.qcow2' : 'DIR/top.qcow2');
        expect(clean(`${dir}/new.qcow2`)).toBe(true);
      });
      expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    });
  }
});
