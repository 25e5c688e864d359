/**
 * Leaving with jobs running: `quit` and SIGTERM cancel them, undo their
 * graph changes and close the images cleanly (no hang: the daemon exits by
 * itself, with status 0); `kill -9` in the middle of a mirror or a backup
 * into qcow2 images leaves images `qemu-img check` finds without
 * corruption (leaks are allowed).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, waitFor, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
const MiB = 1024 * 1024;

/** Exit code of `qemu-img check`: 0 clean, 3 leaks only, 2 corruption. */
function check(file: string): number {
  return spawnSync('qemu-img', ['check', '-q', file]).status ?? -1;
}

async function withJobs(): Promise<{ d: RunningDaemon; dir: string; images: string[] }> {
  const dir = tempDir('qbd-job-exit-');
  dirs.push(dir);
  const names = ['msrc', 'mdst', 'bsrc', 'bdst'];
  const images = names.map((n) => `${dir}/${n}.qcow2`);
  for (const f of images) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, String(32 * MiB)]);
  for (const f of [images[0]!, images[2]!]) execFileSync('qemu-io', ['-c', 'write -P 0x5a 0 24M', f], { stdio: 'ignore' });
  const d = await startDaemon('qbd', [], { dir });
  const c = await d.client();
  for (const [i, n] of names.entries()) {
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': n, file: { driver: 'file', filename: images[i] } });
  }
  // Slow jobs: both are still copying when the daemon is asked to leave.
  await c.cmd('blockdev-mirror', { 'job-id': 'm', device: 'msrc', target: 'mdst', sync: 'full', speed: 2 * MiB });
  await c.cmd('blockdev-backup', { 'job-id': 'b', device: 'bsrc', target: 'bdst', sync: 'full', speed: 2 * MiB });
  await waitFor(() => c.events.filter((e: { data?: { status?: string } }) => e.data?.status === 'running').length >= 2, 10_000, 'jobs running');
  const jobs = (await c.cmd('query-jobs')) as Array<{ status: string }>;
  expect(jobs.map((j) => j.status)).toEqual(['running', 'running']);
  c.close();
  return { d, dir, images };
}

function exited(d: RunningDaemon): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (d.proc.exitCode !== null || d.proc.signalCode !== null) return resolve({ code: d.proc.exitCode, signal: d.proc.signalCode });
    d.proc.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

describe.skipIf(!haveTools)('leaving while block jobs run', () => {
  it('quit cancels the jobs and exits with clean images', async () => {
    const { d, images } = await withJobs();
    const c = await d.client();
    const done = exited(d);
    await c.execute('quit');
    expect(await done).toEqual({ code: 0, signal: null });
    for (const f of images) expect(check(f), f).toBe(0);
  });

  it('SIGTERM cancels the jobs and exits with clean images', async () => {
    const { d, images } = await withJobs();
    const done = exited(d);
    d.proc.kill('SIGTERM');
    expect(await done).toEqual({ code: 0, signal: null });
    for (const f of images) expect(check(f), f).toBe(0);
  });

  for (const job of ['mirror', 'backup'] as const) {
    it(`kill -9 during a ${job} leaves no corrupt image`, async () => {
      const dir = tempDir('qbd-job-kill-');
      dirs.push(dir);
      const src = `${dir}/src.qcow2`;
      const dst = `${dir}/dst.qcow2`;
      for (const f of [src, dst]) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', f, String(32 * MiB)]);
      execFileSync('qemu-io', ['-c', 'write -P 0x5a 0 24M', src], { stdio: 'ignore' });
      const d = await startDaemon('qbd', [], { dir });
      const c = await d.client();
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'dst', file: { driver: 'file', filename: dst } });
      await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/nbd.sock` } } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', writable: true });
      if (job === 'mirror') await c.cmd('blockdev-mirror', { 'job-id': 'j', device: 'src', target: 'dst', sync: 'full', speed: 4 * MiB });
      else await c.cmd('blockdev-backup', { 'job-id': 'j', device: 'src', target: 'dst', sync: 'full', speed: 4 * MiB });
      // A client writes through the export while the job copies: allocations on both images.
      execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 4M 4M', '-c', 'write -P 0x78 26M 2M', '-c', 'flush', `nbd+unix:///src?socket=${dir}/nbd.sock`], { stdio: 'ignore' });
      const progress = ((await c.cmd('query-jobs')) as Array<{ 'current-progress': number }>)[0]!['current-progress'];
      expect(progress).toBeGreaterThan(0);
      c.close();
      const done = exited(d);
      d.proc.kill('SIGKILL');
      expect((await done).signal).toBe('SIGKILL');
      for (const f of [src, dst]) expect([0, 3], f).toContain(check(f));
      // The flushed writes of the client are in the source.
      const out = execFileSync('qemu-io', ['-r', '-c', 'read -P 0x77 4M 4M', '-c', 'read -P 0x78 26M 2M', src], { encoding: 'utf8' });
      expect(out).not.toContain('mismatch');
    });
  }
});
