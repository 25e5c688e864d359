/**
 * blockdev-reopen, qbd beside qemu-storage-daemon: the same errors, nodes
 * switched between read-only and read-write with image locks to match
 * (another process may read the image exactly when the node is read-only),
 * backing children removed and replaced, children reopened with their
 * parent.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff, type Json } from '../helpers/compare';
import { startDaemon, tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { check, qemuImg } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-storage-daemon');

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-reopen-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const img = (name: string): string => path.join(dir, name);
const file = (name: string, extra: Json = {}): Json => ({ driver: 'file', filename: img(name), ...extra });

/** Whether another process can open the image for reading (it cannot while a writer holds it). */
function othersCanRead(name: string): boolean {
  return spawnSync('qemu-img', ['info', img(name)], { encoding: 'utf8' }).status === 0;
}

function dropActualSize(v: Json): Json {
  if (Array.isArray(v)) return v.map(dropActualSize);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'actual-size').map(([k, x]) => [k, dropActualSize(x)]));
  return v;
}

describe.skipIf(!haveTools)('blockdev-reopen, beside qemu-storage-daemon', () => {
  it('gives the reference errors, switches read-only and backing children as it does', async () => {
    const results: Json[] = [];
    for (const flavour of ['qbd', 'qsd'] as const) {
      for (const f of ['base.qcow2', 'top.qcow2', 'other.qcow2', 'lone.qcow2']) fs.rmSync(img(f), { force: true });
      qemuImg('create', '-f', 'qcow2', img('base.qcow2'), '1M');
      qemuImg('create', '-f', 'qcow2', '-b', img('base.qcow2'), '-F', 'qcow2', img('top.qcow2'), '1M');
      qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', img('lone.qcow2'), '1M');
      qemuImg('create', '-f', 'qcow2', img('other.qcow2'), '1M');
      const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-reopen-${flavour}-`) });
      const out: Json[] = [];
      try {
        const c = await d.client();
        const run = async (name: string, args?: Json): Promise<void> => {
          const r = await c.execute(name, args);
          out.push({ [name]: dropActualSize(r.error ?? r.return) });
        };
        const reopen = (...options: Json[]): Promise<void> => run('blockdev-reopen', { options });
        await run('blockdev-add', { driver: 'qcow2', 'node-name': 'base', file: file('base.qcow2') });
        await run('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: file('top.qcow2', { 'node-name': 'topf' }), backing: 'base' });
        await run('blockdev-add', { driver: 'qcow2', 'node-name': 'other', file: file('other.qcow2') });
        // "" is the deprecated spelling of null.
        await run('blockdev-add', { driver: 'qcow2', 'node-name': 'lone', file: file('lone.qcow2'), backing: '' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'base', 'read-only': true });
        out.push({ topReadable: othersCanRead('top.qcow2') });
        await reopen({ driver: 'qcow2', file: 'topf' });
        await reopen({ driver: 'qcow2', 'node-name': 'nope', file: 'topf' });
        await reopen({ driver: 'raw', 'node-name': 'top', file: 'topf' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'top' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'nope' });
        // Named by reference, the read-only file stays read-only: the parent cannot write.
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'base' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'base', 'read-only': false });
        await run('query-named-block-nodes');
        out.push({ topReadable: othersCanRead('top.qcow2') });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: null });
        // No backing_file without a backing node; the image's record still shows, made absolute.
        await run('query-named-block-nodes', { flat: true });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'other' });
        await run('query-named-block-nodes');
        await reopen({ driver: 'qcow2', 'node-name': 'base', file: 'nope' });
        await reopen({ driver: 'qcow2', 'node-name': 'top', file: 'topf', backing: 'base', 'read-only': true });
        await run('query-named-block-nodes');
      } finally {
        await d.stop();
      }
      for (const f of ['base.qcow2', 'top.qcow2', 'other.qcow2']) expect(check(img(f)).status).toBe(0);
      results.push(normalise(out, dir));
    }
    expect(structuralDiff(results[0], results[1], '$', true)).toEqual([]);
  });
});
