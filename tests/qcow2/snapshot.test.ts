/**
 * External snapshots (blockdev-snapshot, blockdev-snapshot-sync) and write
 * thresholds, qbd beside qemu-storage-daemon: the same replies, errors,
 * events and graph afterwards; data written through an export after the
 * snapshot lands in the overlay, and both images check clean.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { check, qemuImg } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-snapshot-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const img = (name: string): string => path.join(dir, name);

/** Host allocation differs with the file system, not with the daemon. */
function dropActualSize(v: Json): Json {
  if (Array.isArray(v)) return v.map(dropActualSize);
  if (v && typeof v === 'object') {
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) if (k !== 'actual-size') out[k] = dropActualSize(x);
    return out;
  }
  return v;
}

/** Runs `steps` on a fresh daemon of each flavour, with the images `setup` makes anew before each. */
async function both(setup: () => void, steps: (c: QmpTestClient, d: RunningDaemon) => Promise<Json>): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    setup();
    const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-snapshot-${flavour}-`) });
    try {
      const c = await d.client();
      out.push(normalise(dropActualSize(await steps(c, d)), dir));
    } finally {
      await d.stop();
    }
  }
  return { ours: out[0], theirs: out[1] };
}

/** Replies as they come, errors included. */
async function transcript(c: QmpTestClient, cmds: Array<[string, Json?]>): Promise<Json[]> {
  const out: Json[] = [];
  for (const [name, args] of cmds) {
    const r = await c.execute(name, args);
    out.push({ [name]: r.error ?? r.return });
  }
  return out;
}

function qcow2(name: string, ...extra: string[]): void {
  fs.rmSync(img(name), { force: true });
  qemuImg('create', '-f', 'qcow2', ...extra, img(name), '1M');
}

const file = (name: string): Json => ({ driver: 'file', filename: img(name) });

function nbdIo(socket: string, exportName: string, ...cmds: string[]): string {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  return execFileSync('qemu-io', [...args, `nbd+unix:///${exportName}?socket=${socket}`], { encoding: 'utf8' });
}

describe.skipIf(!haveTools)('external snapshots and write thresholds, beside qemu-storage-daemon', () => {
  it('blockdev-snapshot: the reference errors, then the overlay takes the node place for an export', async () => {
    const setup = (): void => {
      qcow2('base.qcow2');
      qcow2('ov.qcow2');
      qcow2('ov-backed.qcow2', '-b', img('base.qcow2'), '-F', 'qcow2');
    };
    const { ours, theirs } = await both(setup, (c, d) =>
      transcript(c, [
        ['blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: file('base.qcow2') }],
        ['blockdev-snapshot', { node: 'nope', overlay: 'ov' }],
        ['blockdev-snapshot', { node: 'base', overlay: 'nope' }],
        ['blockdev-add', { driver: 'qcow2', 'node-name': 'backed', file: file('ov-backed.qcow2'), backing: null }],
        ['blockdev-snapshot', { node: 'base', overlay: 'backed' }],
        ['blockdev-add', { driver: 'qcow2', 'node-name': 'ro', 'read-only': true, file: file('ov.qcow2') }],
        ['nbd-server-start', { addr: { type: 'unix', data: { path: path.join(d.dir, 'nbd.sock') } } }],
        ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'base', writable: true }],
        ['blockdev-snapshot', { node: 'base', overlay: 'ro' }],
        ['blockdev-snapshot', { node: 'base', overlay: 'base' }],
        ['blockdev-del', { 'node-name': 'ro' }],
        ['blockdev-add', { driver: 'null-co', 'node-name': 'null' }],
        ['blockdev-snapshot', { node: 'base', overlay: 'null' }],
        ['blockdev-add', { driver: 'qcow2', 'node-name': 'ov', file: file('ov.qcow2') }],
        ['blockdev-snapshot', { node: 'base', overlay: 'ov' }],
        ['query-named-block-nodes'],
        ['x-debug-query-block-graph'],
        ['query-block-exports'],
        ['blockdev-snapshot', { node: 'base', overlay: 'ov' }],
        ['blockdev-del', { 'node-name': 'base' }],
        ['block-export-del', { id: 'e' }],
      ]),
    );
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('blockdev-snapshot-sync: the reference errors, the image it creates, and the node left read-only', async () => {
    const { ours, theirs } = await both(
      () => {
        qcow2('base.qcow2');
        fs.rmSync(img('sync.qcow2'), { force: true });
      },
      async (c) => {
        const replies = await transcript(c, [
          ['blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: file('base.qcow2') }],
          ['blockdev-snapshot-sync', { device: 'base', 'snapshot-file': img('sync.qcow2') }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.qcow2') }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.qcow2'), 'snapshot-node-name': 'base' }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('nodir/x.qcow2'), 'snapshot-node-name': 's' }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.qcow2'), 'snapshot-node-name': 's', format: 'bogus' }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.raw'), 'snapshot-node-name': 's', format: 'raw' }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('missing.qcow2'), 'snapshot-node-name': 's', mode: 'existing' }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.qcow2'), 'snapshot-node-name': '1bad' }],
          ['nbd-server-start', { addr: { type: 'unix', data: { path: img('sync-nbd.sock') } } }],
          ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'base', writable: true }],
          ['blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('sync.qcow2'), 'snapshot-node-name': 's' }],
          ['query-named-block-nodes'],
          ['x-debug-query-block-graph'],
          ['blockdev-del', { 'node-name': 's' }],
          ['block-export-del', { id: 'e' }],
        ]);
        const info = JSON.parse(qemuImg('info', '-U', '--output=json', img('sync.qcow2')));
        return { replies, info: dropActualSize(info), check: check(img('sync.qcow2')).status };
      },
    );
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });

  it('writes through an export land in the overlay after blockdev-snapshot-sync, and both images check clean', async () => {
    qcow2('data-base.qcow2');
    fs.rmSync(img('data-top.qcow2'), { force: true });
    const d = await startDaemon('qbd', [], { dir: tempDir('qbd-snapshot-data-') });
    const sock = path.join(d.dir, 'nbd.sock');
    try {
      const c = await d.client();
      await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: file('data-base.qcow2') });
      await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'base', writable: true });
      nbdIo(sock, 'base', 'write -P 0xaa 0 192k');
      await c.cmd('blockdev-snapshot-sync', { 'node-name': 'base', 'snapshot-file': img('data-top.qcow2'), 'snapshot-node-name': 'top' });
      // The same connection string reaches the overlay now: writes go there, reads see the base below.
      nbdIo(sock, 'base', 'write -P 0xbb 64k 64k', 'write -z 128k 32k');
      expect(nbdIo(sock, 'base', 'read -P 0xaa 0 64k', 'read -P 0xbb 64k 64k', 'read -P 0 128k 32k', 'read -P 0xaa 160k 32k')).not.toMatch(/Pattern verification failed/);
      await c.cmd('block-export-del', { id: 'e' });
      await c.waitEvent('BLOCK_EXPORT_DELETED');
    } finally {
      await d.stop();
    }
    expect(check(img('data-base.qcow2')).status).toBe(0);
    expect(check(img('data-top.qcow2')).status).toBe(0);
    const expectBase = img('expect-base.raw');
    const expectTop = img('expect-top.raw');
    fs.writeFileSync(expectBase, Buffer.alloc(1 << 20));
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 0 192k', expectBase]);
    fs.copyFileSync(expectBase, expectTop);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0xbb 64k 64k', '-c', 'write -z 128k 32k', expectTop]);
    qemuImg('compare', '-f', 'qcow2', '-F', 'raw', img('data-base.qcow2'), expectBase);
    qemuImg('compare', '-f', 'qcow2', '-F', 'raw', img('data-top.qcow2'), expectTop);
    const info = JSON.parse(qemuImg('info', '--output=json', img('data-top.qcow2')));
    expect(info['backing-filename']).toBe(img('data-base.qcow2'));
    expect(info['backing-filename-format']).toBe('qcow2');
  });

  it('block-set-write-threshold: the event once, the threshold back to 0, as the reference', async () => {
    const { ours, theirs } = await both(
      () => qcow2('wt.qcow2'),
      async (c, d) => {
        const sock = path.join(d.dir, 'nbd.sock');
        const replies = await transcript(c, [
          ['block-set-write-threshold', { 'node-name': 'nope', 'write-threshold': 1 }],
          ['blockdev-add', { driver: 'qcow2', 'node-name': 'wt', file: file('wt.qcow2') }],
          ['block-set-write-threshold', { 'node-name': 'wt', 'write-threshold': 65536 }],
          ['nbd-server-start', { addr: { type: 'unix', data: { path: sock } } }],
          ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'wt', writable: true }],
        ]);
        const before = (await c.cmd('query-named-block-nodes')).map((n: Json) => [n['node-name'], n.write_threshold]);
        // Below the threshold: no event; then two writes past it: one event.
        nbdIo(sock, 'wt', 'write 0 64k', 'write 96k 32k', 'write 256k 4k');
        const ev = await c.waitEvent('BLOCK_WRITE_THRESHOLD');
        const after = (await c.cmd('query-named-block-nodes')).map((n: Json) => [n['node-name'], n.write_threshold]);
        await c.cmd('block-export-del', { id: 'e' });
        await c.waitEvent('BLOCK_EXPORT_DELETED');
        const more = c.events.filter((e: Json) => e.event === 'BLOCK_WRITE_THRESHOLD').length;
        return { replies, before, event: { event: ev.event, data: ev.data }, after, more };
      },
    );
    expect(structuralDiff(ours, theirs, '$', true)).toEqual([]);
  });
});
