/**
 * The dirty bitmap actions of `transaction`, driven directly: prepare does
 * the command's work, abort puts everything back, commit keeps it. Writes
 * go through a node's I/O context, so the bits checked are the ones the
 * write path set in shared memory. Also: a bitmap keeps recording when its
 * node moves to another I/O context.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { blockdevAdd, closeAllNodes, dist, findNode, getDefaultContext, request, stopAllContexts, write } from '../helpers/in-process-block';

/* eslint-disable @typescript-eslint/no-require-imports */
const { transactionActionFactory } = require(`${dist}/qmp/transaction-actions.js`);
require(`${dist}/qmp/commands/dirty-bitmap-actions.js`);
const { bitmapsOf, findBitmap, bitmapSha256 } = require(`${dist}/block/global-state/dirty-bitmaps.js`);
const { addIothreadContext } = require(`${dist}/block/global-state/io-contexts.js`);
const { moveToContext } = require(`${dist}/block/global-state/iothread-move.js`);

const ctx = { completionMode: 'individual', shared: new Map() };
const MiB = 1 << 20;

let dir: string;
beforeAll(async () => {
  dir = tempDir('qbd-bitmap-actions-');
  getDefaultContext();
  await blockdevAdd({ driver: 'null-co', 'node-name': 'n', size: 16 * MiB });
  await blockdevAdd({ driver: 'null-co', 'node-name': 'm', size: 16 * MiB });
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

function action(type: string, data: Record<string, unknown>) {
  return transactionActionFactory(type)(data, ctx);
}

function bitmap(node: string, name: string) {
  return findBitmap(findNode(node), name);
}

function names(node: string): string[] {
  return bitmapsOf(findNode(node)).map((b: { name: string }) => b.name);
}

describe('dirty bitmap transaction actions', () => {
  it('are registered for every bitmap command', () => {
    for (const t of ['add', 'remove', 'clear', 'enable', 'disable', 'merge']) expect(transactionActionFactory(`block-dirty-bitmap-${t}`)).toBeTypeOf('function');
  });

  it('add: abort drops the new bitmap, commit keeps it; a failing prepare adds nothing', async () => {
    const a = action('block-dirty-bitmap-add', { node: 'n', name: 'a', granularity: 4096 });
    await a.prepare();
    expect(names('n')).toContain('a');
    await a.abort();
    expect(names('n')).not.toContain('a');

    const b = action('block-dirty-bitmap-add', { node: 'n', name: 'a', granularity: 4096 });
    await b.prepare();
    b.commit?.();
    expect(bitmap('n', 'a').granularity).toBe(4096);

    const dup = action('block-dirty-bitmap-add', { node: 'n', name: 'a' });
    await expect(dup.prepare()).rejects.toThrow('Bitmap already exists: a');
  });

  it('clear and merge: abort restores the bits the write path had set', async () => {
    await write('n', 0, Buffer.alloc(4096, 1));
    await write('n', 5 * MiB + 100, Buffer.alloc(10_000, 1));
    const bm = bitmap('n', 'a');
    const count = bm.bits.count();
    const hash = bitmapSha256(bm);
    expect(count).toBe(4096 + 3 * 4096);

    const clear = action('block-dirty-bitmap-clear', { node: 'n', name: 'a' });
    await clear.prepare();
    expect(bm.bits.count()).toBe(0);
    await clear.abort();
    expect(bitmapSha256(bm)).toBe(hash);

    const add = action('block-dirty-bitmap-add', { node: 'n', name: 'src', granularity: 65536 });
    await add.prepare();
    add.commit?.();
    await write('n', 9 * MiB, Buffer.alloc(512, 2));
    const beforeMerge = bitmapSha256(bm);
    const merge = action('block-dirty-bitmap-merge', { node: 'n', target: 'a', bitmaps: ['src'] });
    await merge.prepare();
    // The write set one 4 KiB chunk of `a` itself; the merge sets the 64 KiB around it.
    expect(bm.bits.count()).toBe(count + 65536);
    await merge.abort();
    expect(bitmapSha256(bm)).toBe(beforeMerge);

    const bad = action('block-dirty-bitmap-merge', { node: 'n', target: 'a', bitmaps: ['src', 'nope'] });
    expect(() => bad.prepare()).toThrow("Dirty bitmap 'nope' not found");
    expect(bitmapSha256(bm)).toBe(beforeMerge);
  });

  it('enable and disable: abort restores the recording state, and a disabled bitmap records nothing', async () => {
    const bm = bitmap('n', 'a');
    const hash = bitmapSha256(bm);
    const disable = action('block-dirty-bitmap-disable', { node: 'n', name: 'a' });
    await disable.prepare();
    disable.commit?.();
    await write('n', 12 * MiB, Buffer.alloc(4096, 3));
    await request('n', { op: 'write-zeroes', offset: 13 * MiB, bytes: 8192 });
    expect(bitmapSha256(bm)).toBe(hash);

    const enable = action('block-dirty-bitmap-enable', { node: 'n', name: 'a' });
    await enable.prepare();
    expect(bm.enabled).toBe(true);
    await enable.abort();
    expect(bm.enabled).toBe(false);

    const again = action('block-dirty-bitmap-enable', { node: 'n', name: 'a' });
    await again.prepare();
    again.commit?.();
    await request('n', { op: 'write-zeroes', offset: 13 * MiB, bytes: 8192 });
    expect(bitmapSha256(bm)).not.toBe(hash);
  });

  it('remove: the bitmap is busy until commit drops it; abort gives it back', async () => {
    const rm = action('block-dirty-bitmap-remove', { node: 'n', name: 'src' });
    await rm.prepare();
    expect(bitmap('n', 'src').busy).toBe(true);
    // Busy: another action of the same transaction may not use it.
    const clear = action('block-dirty-bitmap-clear', { node: 'n', name: 'src' });
    expect(() => clear.prepare()).toThrow("Bitmap 'src' is currently in use by another operation and cannot be used");
    await rm.abort();
    expect(bitmap('n', 'src').busy).toBe(false);

    const rm2 = action('block-dirty-bitmap-remove', { node: 'n', name: 'src' });
    await rm2.prepare();
    rm2.commit?.();
    expect(names('n')).not.toContain('src');
  });

  it('keeps recording into the same bits when its node moves to another I/O context', async () => {
    const add = action('block-dirty-bitmap-add', { node: 'm', name: 'mv', granularity: 65536 });
    await add.prepare();
    const bm = bitmap('m', 'mv');
    await write('m', 0, Buffer.alloc(512, 1));
    await moveToContext(findNode('m'), addIothreadContext('io-bitmaps'), true);
    await write('m', 8 * MiB, Buffer.alloc(512, 1));
    expect(bm.bits.count()).toBe(2 * 65536);
  });
});
