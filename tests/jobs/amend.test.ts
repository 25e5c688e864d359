/**
 * x-blockdev-amend beside qemu-storage-daemon: the same replies and errors,
 * the same `amend` jobs (events, query-jobs, the error of a job that
 * cannot amend), and an image left as it was.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { both, dirs, img, jobEvents, MiB, type Session } from '../helpers/job-session';
import { waitFor } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A raw image `r` (added by the session) and a qcow2 image the script adds itself. */
function images(dir: string): Record<string, string> {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'q.qcow2'), String(MiB)]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 0 64k', path.join(dir, 'q.qcow2')], { stdio: 'ignore' });
  return { r: img(dir, 'r.raw', MiB) };
}

/** Runs one amend; a job that starts is awaited until concluded, queried and dismissed. */
async function amend(s: Session, id: string, node: string, options: Record<string, unknown>, force?: boolean): Promise<void> {
  const args: Record<string, unknown> = { 'job-id': id, 'node-name': node, options };
  if (force !== undefined) args.force = force;
  const reply = await s.t.run('x-blockdev-amend', args);
  if (!reply.error) await concludeAndDismiss(s, id);
}

async function concludeAndDismiss(s: Session, id: string): Promise<void> {
  await waitFor(() => s.c.events.some((e: any) => e.data?.id === id && e.data?.status === 'concluded'), 20_000, `job ${id} concluded`);
  await s.t.run('query-jobs');
  await s.t.run('job-dismiss', { id });
}

describe.skipIf(!haveTools)('x-blockdev-amend, beside qemu-storage-daemon', () => {
  it('runs amend jobs on qcow2 and refuses other drivers, unknown nodes and reused job ids as the reference does', async () => {
    const checks: Record<string, string> = {};
    const r = await both(images, async (s) => {
      await s.t.run('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', 'node-name': 'qf', filename: path.join(s.dir, 'q.qcow2') } });
      await amend(s, 'plain', 'q', { driver: 'qcow2' });
      await amend(s, 'forced', 'q', { driver: 'qcow2' }, true);
      await amend(s, 'qcow-encrypt', 'q', { driver: 'qcow2', encrypt: { format: 'qcow' } });
      await amend(s, 'luks-encrypt', 'q', { driver: 'qcow2', encrypt: { format: 'luks', state: 'active', 'new-secret': 'sec0' } });
      await amend(s, 'raw', 'r', { driver: 'raw' });
      await amend(s, 'file', 'qf', { driver: 'file' });
      await amend(s, 'other-driver', 'q', { driver: 'raw' });
      await amend(s, 'nowhere', 'nope', { driver: 'qcow2' });
      await s.t.run('x-blockdev-amend', { 'job-id': 'twice', 'node-name': 'q', options: { driver: 'qcow2' } });
      await s.t.run('x-blockdev-amend', { 'job-id': 'twice', 'node-name': 'q', options: { driver: 'qcow2' } });
      await concludeAndDismiss(s, 'twice');
      // A concluded job still holds its node until it is dismissed.
      await s.t.run('x-blockdev-amend', { 'job-id': 'held', 'node-name': 'q', options: { driver: 'qcow2' } });
      await waitFor(() => s.c.events.some((e: any) => e.data?.id === 'held' && e.data?.status === 'concluded'), 20_000, 'job held concluded');
      await s.t.run('blockdev-del', { 'node-name': 'q' });
      await s.t.run('job-dismiss', { id: 'held' });
      await s.t.run('blockdev-del', { 'node-name': 'q' });
      checks[s.daemon.flavour] = execFileSync('qemu-img', ['check', '-U', path.join(s.dir, 'q.qcow2')], { encoding: 'utf8' });
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.lines.join('\n')).toContain('Block device q is in use');
    for (const job of ['plain', 'forced', 'qcow-encrypt', 'luks-encrypt', 'twice', 'held']) {
      expect(jobEvents(r.qbd.t.events, job), job).toEqual(jobEvents(r.qsd.t.events, job));
    }
    expect(r.qbd.t.lines.join('\n')).toContain("image is not encrypted, can't amend");
    expect(jobEvents(r.qbd.t.events, 'plain').length).toBeGreaterThan(0);
    expect(checks.qbd).toContain('No errors were found on the image.');
  });
});
