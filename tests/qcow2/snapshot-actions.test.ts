/**
 * The `transaction` actions blockdev-snapshot and blockdev-snapshot-sync,
 * driven step by step in the test process as the transaction command
 * drives them: prepare does the graph change, abort undoes it completely,
 * commit makes the old node read-only.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { dist } from '../helpers/in-process-block';
import { toolAvailable } from '../helpers/tools';
import { blockdevAdd, check, closeAllNodes, findNode, getDefaultContext, qemuImg, qemuIo, read, stopAllContexts, write } from './helpers';

/* eslint-disable @typescript-eslint/no-require-imports */
require(`${dist}/block/global-state/external-snapshot.js`);
const { transactionActionFactory } = require(`${dist}/qmp/transaction-actions.js`);

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-snapshot-actions-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ctx = (completionMode = 'individual') => ({ completionMode, shared: new Map() });

function action(type: string, data: unknown, mode?: string) {
  return transactionActionFactory(type)(data, ctx(mode));
}

let serial = 0;

/** A qcow2 image `base` (pattern 0x11 in its first 64 KiB) under a raw node `top`, and an empty qcow2 `ov`. */
async function chain(): Promise<{ base: string; ov: string; top: string; ovFile: string; baseFile: string }> {
  const n = serial++;
  const baseFile = path.join(dir, `base${n}.qcow2`);
  const ovFile = path.join(dir, `ov${n}.qcow2`);
  qemuImg('create', '-f', 'qcow2', baseFile, '1M');
  qemuIo(baseFile, 'write -P 0x11 0 64k');
  qemuImg('create', '-f', 'qcow2', ovFile, '1M');
  const base = `base${n}`;
  const ov = `ov${n}`;
  const top = `top${n}`;
  await blockdevAdd({ driver: 'qcow2', 'node-name': base, file: { driver: 'file', filename: baseFile } });
  await blockdevAdd({ driver: 'qcow2', 'node-name': ov, file: { driver: 'file', filename: ovFile } });
  await blockdevAdd({ driver: 'raw', 'node-name': top, file: base });
  return { base, ov, top, ovFile, baseFile };
}

describe.skipIf(!haveTools)('snapshot transaction actions', () => {
  it('registers both actions', () => {
    expect(transactionActionFactory('blockdev-snapshot')).toBeTypeOf('function');
    expect(transactionActionFactory('blockdev-snapshot-sync')).toBeTypeOf('function');
  });

  it('prepare puts the overlay in place; abort restores the graph and the data path', async () => {
    const { base, ov, top } = await chain();
    const a = action('blockdev-snapshot', { node: base, overlay: ov });
    await a.prepare();
    expect(findNode(top).child('file').name).toBe(ov);
    expect(findNode(ov).child('backing').name).toBe(base);
    // Reads through the parent reach the base below the overlay.
    expect((await read(top, 0, 4096)).every((b: number) => b === 0x11)).toBe(true);
    await a.abort();
    a.clean?.();
    expect(findNode(top).child('file').name).toBe(base);
    expect(findNode(ov).child('backing')).toBeUndefined();
    expect(findNode(base).readOnly).toBe(false);
    expect(findNode(base).parents.map((e: { parent: { name: string } }) => e.parent.name)).toEqual([top]);
    // Writes go to the base again.
    await write(top, 0, Buffer.alloc(4096, 0x22));
    expect((await read(base, 0, 4096)).every((b: number) => b === 0x22)).toBe(true);
  });

  it('prepare then commit leaves the old node and its file read-only, writes in the overlay, images clean', async () => {
    const { base, ov, top, ovFile, baseFile } = await chain();
    const a = action('blockdev-snapshot', { node: base, overlay: ov });
    await a.prepare();
    a.commit?.();
    a.clean?.();
    expect(findNode(base).readOnly).toBe(true);
    expect(findNode(base).child('file').readOnly).toBe(true);
    await write(top, 65536, Buffer.alloc(65536, 0x33));
    expect((await read(top, 0, 131072)).subarray(0, 65536).every((b: number) => b === 0x11)).toBe(true);
    expect((await read(ov, 65536, 65536)).every((b: number) => b === 0x33)).toBe(true);
    expect((await read(base, 65536, 65536)).every((b: number) => b === 0)).toBe(true);
    await closeAllNodes();
    expect(check(baseFile).status).toBe(0);
    expect(check(ovFile).status).toBe(0);
  });

  it('a failing second prepare aborts the first: the transaction changes nothing', async () => {
    const { base, ov, top } = await chain();
    const other = await chain();
    const first = action('blockdev-snapshot', { node: base, overlay: ov });
    // The second overlay already has a backing node once the first action put it there.
    const second = action('blockdev-snapshot', { node: other.base, overlay: ov });
    await first.prepare();
    await expect(second.prepare()).rejects.toThrow('The overlay already has a backing image');
    await first.abort();
    first.clean?.();
    second.clean?.();
    expect(findNode(top).child('file').name).toBe(base);
    expect(findNode(ov).child('backing')).toBeUndefined();
    expect(findNode(other.top).child('file').name).toBe(other.base);
  });

  it('blockdev-snapshot-sync: abort closes the overlay it opened; the image it created stays', async () => {
    const { base, top } = await chain();
    const file = path.join(dir, `sync${serial}.qcow2`);
    const a = action('blockdev-snapshot-sync', { 'node-name': base, 'snapshot-file': file, 'snapshot-node-name': `sync${serial}` });
    await a.prepare();
    expect(findNode(top).child('file').name).toBe(`sync${serial}`);
    await a.abort();
    a.clean?.();
    expect(findNode(`sync${serial}`)).toBeUndefined();
    expect(findNode(top).child('file').name).toBe(base);
    expect(JSON.parse(qemuImg('info', '-U', '--output=json', file))['backing-filename']).toContain(`base${serial - 1}.qcow2`);
  });

  it('refuses grouped completion as the reference does', async () => {
    const { base, ov } = await chain();
    await expect(action('blockdev-snapshot', { node: base, overlay: ov }, 'grouped').prepare()).rejects.toThrow(
      "Action 'blockdev-snapshot' does not support Transaction property completion-mode = grouped",
    );
    await expect(action('blockdev-snapshot-sync', { 'node-name': base, 'snapshot-file': '/nonexistent' }, 'grouped').prepare()).rejects.toThrow(
      "Action 'blockdev-snapshot-sync' does not support Transaction property completion-mode = grouped",
    );
  });
});
