/**
 * Dirty bitmap actions through the `transaction` command, beside
 * qemu-storage-daemon: an atomic checkpoint of several disks (a new bitmap
 * and a full backup of each, individually and as a group), and
 * transactions that fail halfway, which must leave no new bitmap and every
 * bitmap's bits, recording state and busy flag as they were.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Json } from '../helpers/compare';
import { waitFor } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { bitmapsByNode, both, hashes, qemuIo, type Session } from './support';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-io') && toolAvailable('qemu-img');
const MiB = 1 << 20;
const DISKS = ['d0', 'd1', 'd2'];

/** Events so far, without timestamps, in a stable order (the jobs run side by side). */
function takeEvents(c: QmpTestClient): string[] {
  const events = c.events.splice(0);
  return events.map((e) => `${e.event} ${JSON.stringify(e.data ?? {})}`).sort();
}

/** A raw disk per name, with a pattern, opened and exported writable under its own name. */
async function disks(s: Session): Promise<void> {
  for (const [i, name] of DISKS.entries()) {
    const f = path.join(s.work, `${name}.raw`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', f, String(4 * MiB)]);
    execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P ${0x10 + i} 0 3M`, f], { stdio: 'pipe' });
    await s.c.cmd('blockdev-add', { driver: 'raw', 'node-name': name, file: { driver: 'file', filename: f } });
    await s.c.cmd('block-export-add', { type: 'nbd', id: name, 'node-name': name, writable: true });
  }
}

async function checkpoint(s: Session, mode: 'individual' | 'grouped'): Promise<Json> {
  const { c } = s;
  await disks(s);
  const actions: Json[] = [];
  for (const name of DISKS) {
    const t = path.join(s.work, `${name}-full.raw`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', t, String(4 * MiB)]);
    await c.cmd('blockdev-add', { driver: 'raw', 'node-name': `${name}-full`, file: { driver: 'file', filename: t } });
    actions.push({ type: 'block-dirty-bitmap-add', data: { node: name, name: 'cp', granularity: 65536 } });
    actions.push({ type: 'blockdev-backup', data: { 'job-id': `j-${name}`, device: name, target: `${name}-full`, sync: 'full' } });
  }
  takeEvents(c);
  const reply = await c.execute('transaction', { actions, properties: { 'completion-mode': mode } });
  if (reply.error) return { reply, bitmaps: await bitmapsByNode(c), jobs: await c.cmd('query-jobs'), events: takeEvents(c) };
  // Every job has gone (status null) before the events are compared.
  const gone = () => c.events.filter((e) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null').length;
  await waitFor(() => gone() === DISKS.length, 20_000, 'the jobs to go');
  const events = takeEvents(c);
  const same = DISKS.map((name) => {
    try {
      execFileSync('qemu-img', ['compare', '-q', '-U', '-f', 'raw', '-F', 'raw', path.join(s.work, `${name}-full.raw`), path.join(s.work, `${name}.raw`)]);
      return true;
    } catch {
      return false;
    }
  });
  // Written after the checkpoint: only d1's bitmap records it.
  qemuIo(s, 'd1', 'write -P 0x77 1M 64k');
  return { reply, events, bitmaps: await bitmapsByNode(c), same };
}

/** d0 with bitmaps: `b` enabled with bits, `d` disabled with other bits; the state a failed transaction must keep. */
async function bitmapsWithBits(s: Session): Promise<void> {
  await disks(s);
  await s.c.cmd('block-dirty-bitmap-add', { node: 'd0', name: 'b', granularity: 65536 });
  await s.c.cmd('block-dirty-bitmap-add', { node: 'd0', name: 'd', granularity: 65536 });
  qemuIo(s, 'd0', 'write -P 1 0 64k');
  await s.c.cmd('block-dirty-bitmap-disable', { node: 'd0', name: 'd' });
  qemuIo(s, 'd0', 'write -P 2 2M 128k');
}

async function state(c: QmpTestClient): Promise<Json> {
  return { bitmaps: await bitmapsByNode(c), hashes: await hashes(c, [['d0', 'b'], ['d0', 'd']]), jobs: await c.cmd('query-jobs') };
}

async function failingHalfway(s: Session): Promise<Json> {
  const { c } = s;
  await bitmapsWithBits(s);
  const before = await state(c);
  takeEvents(c);
  const undone = [
    { type: 'block-dirty-bitmap-add', data: { node: 'd0', name: 'new' } },
    { type: 'block-dirty-bitmap-add', data: { node: 'd1', name: 'new' } },
    { type: 'block-dirty-bitmap-clear', data: { node: 'd0', name: 'b' } },
    { type: 'block-dirty-bitmap-disable', data: { node: 'd0', name: 'b' } },
    { type: 'block-dirty-bitmap-enable', data: { node: 'd0', name: 'd' } },
    { type: 'block-dirty-bitmap-merge', data: { node: 'd0', target: 'd', bitmaps: ['b'] } },
  ];
  const out: Json = {
    abortLast: await c.execute('transaction', { actions: [...undone, { type: 'abort', data: {} }] }),
    badSecond: await c.execute('transaction', { actions: [undone[0], { type: 'block-dirty-bitmap-add', data: { node: 'd0', name: 'new' } }] }),
    badBackup: await c.execute('transaction', {
      actions: [...undone, { type: 'blockdev-backup', data: { 'job-id': 'j', device: 'd2', target: 'nowhere', sync: 'full' } }],
      properties: { 'completion-mode': 'grouped' },
    }),
    missingBitmap: await c.execute('transaction', { actions: [undone[0], undone[2], { type: 'block-dirty-bitmap-merge', data: { node: 'd0', target: 'd', bitmaps: ['b', 'gone'] } }] }),
  };
  out.after = await state(c);
  out.unchanged = JSON.stringify(out.after) === JSON.stringify(before);
  out.events = takeEvents(c);
  return out;
}

describe.skipIf(!haveTools)('dirty bitmaps in transactions, beside qemu-storage-daemon', () => {
  it('a bitmap and a full backup of each of three disks make one checkpoint', async () => {
    const { ours, theirs } = await both((s) => checkpoint(s, 'individual'));
    expect(ours).toEqual(theirs);
    expect(theirs.reply).toEqual({ return: {} });
    expect(theirs.same).toEqual([true, true, true]);
    expect(DISKS.map((n) => theirs.bitmaps[n].find((b: Json) => b.name === 'cp').count)).toEqual([0, 65536, 0]);
  });

  it('completion-mode grouped: the bitmap actions refuse it, and nothing is left behind', async () => {
    const { ours, theirs } = await both((s) => checkpoint(s, 'grouped'));
    expect(ours).toEqual(theirs);
    expect(theirs.reply.error.desc).toBe("Action 'block-dirty-bitmap-add' does not support Transaction property completion-mode = grouped");
    expect(theirs.bitmaps).toEqual({});
    expect(theirs.jobs).toEqual([]);
  });

  it('a transaction failing halfway leaves no bitmap behind and every bitmap as it was', async () => {
    const { ours, theirs } = await both(failingHalfway);
    expect(ours).toEqual(theirs);
    expect(theirs.unchanged).toBe(true);
    expect(theirs.abortLast.error.desc).toBe('Transaction aborted using Abort action');
  });
});
