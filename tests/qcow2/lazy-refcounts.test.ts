/**
 * Lazy refcounts over QMP, qbd beside qemu-storage-daemon: the same commands
 * (blockdev-add of a lazy-refcounts image, writes through an NBD export,
 * flush, blockdev-del) give the same `dirty-flag` in query-named-block-nodes
 * and the same dirty bit in the header at each step; the `lazy-refcounts`
 * runtime option overrides the header bit alike; blockdev-create makes the
 * same image.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { deleteExport, type QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { expectClean, qemuImg } from './helpers';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

let dir: string;
const daemons: RunningDaemon[] = [];
beforeAll(() => {
  dir = tempDir('qbd-qcow2-lazy-');
});
afterAll(async () => {
  for (const d of daemons) await d.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Incompatible bit 0 of the header on disk. */
function headerDirty(image: string): boolean {
  const fd = fs.openSync(image, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 72);
    return (b.readBigUInt64BE(0) & 1n) !== 0n;
  } finally {
    fs.closeSync(fd);
  }
}

async function nodeImage(c: QmpTestClient, name: string): Promise<Json> {
  const nodes = await c.cmd('query-named-block-nodes');
  return nodes.find((n: Json) => n['node-name'] === name)?.image;
}

/** Runs `steps` against a fresh daemon of each flavour (each on its own copy of the images); returns what each saw. */
async function both(setup: (flavourDir: string) => void, steps: (c: QmpTestClient, flavourDir: string) => Promise<Json>): Promise<{ ours: Json; theirs: Json }> {
  const out: Json[] = [];
  for (const flavour of ['qbd', 'qsd'] as const) {
    const fdir = path.join(dir, `${flavour}-${out.length}-${Date.now()}`);
    fs.mkdirSync(fdir);
    setup(fdir);
    const d = await startDaemon(flavour, [], { dir: tempDir(`qbd-lazy-${flavour}-`) });
    daemons.push(d);
    const c = await d.client();
    out.push(await steps(c, fdir));
    await d.stop();
  }
  return { ours: out[0], theirs: out[1] };
}

function qemuIoNbd(socket: string, ...cmds: string[]): void {
  const args = ['-f', 'raw'];
  for (const cmd of cmds) args.push('-c', cmd);
  execFileSync('qemu-io', [...args, `nbd+unix:///n?socket=${socket}`], { stdio: 'ignore' });
}

/** Writes through an NBD export of node `n`, noting the dirty flag (query and header) after each step. */
async function writeSequence(c: QmpTestClient, fdir: string, options: Json): Promise<Json> {
  const image = path.join(fdir, 'a.qcow2');
  const seen: Json[] = [];
  const note = async (step: string): Promise<void> => {
    const img = await nodeImage(c, 'n');
    seen.push({ step, 'dirty-flag': img?.['dirty-flag'], 'lazy-refcounts': img?.['format-specific']?.data?.['lazy-refcounts'], header: headerDirty(image) });
  };
  const added = await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: { driver: 'file', filename: image }, ...options });
  if (added.error) return { error: added.error };
  await note('added');
  const socket = path.join(fdir, 'nbd.sock');
  await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', writable: true });
  // Zeroing whole clusters allocates nothing: the image stays clean.
  qemuIoNbd(socket, 'write -z 0 64k');
  await note('zeroed');
  qemuIoNbd(socket, 'write -P 1 64k 4k');
  await note('allocated');
  qemuIoNbd(socket, 'flush');
  await note('flushed');
  qemuIoNbd(socket, 'write -P 2 64k 4k', 'write -P 3 1M 64k');
  await note('written again');
  await deleteExport(c, 'e');
  await c.cmd('blockdev-del', { 'node-name': 'n' });
  seen.push({ step: 'deleted', header: headerDirty(image) });
  expectClean(image);
  execFileSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 2 64k 4k', '-c', 'read -P 3 1M 64k', image], { stdio: 'ignore' });
  return seen;
}

describe.skipIf(!haveTools)('qcow2 lazy refcounts, beside qemu-storage-daemon', () => {
  it('sets the dirty flag before the first allocating write and clears it at blockdev-del, not at flush', async () => {
    const { ours, theirs } = await both(
      (fdir) => qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path.join(fdir, 'a.qcow2'), '4M'),
      (c, fdir) => writeSequence(c, fdir, {}),
    );
    expect(ours).toEqual(theirs);
    // The reference's answer, spelled out: dirty from the first allocation until the node goes.
    expect(theirs.map((s: Json) => s.header)).toEqual([false, false, true, true, true, false]);
  });

  it('lets the lazy-refcounts option override the header bit either way', async () => {
    for (const [create, option] of [
      ['lazy_refcounts=on', false],
      ['lazy_refcounts=off', true],
    ] as const) {
      const { ours, theirs } = await both(
        (fdir) => qemuImg('create', '-f', 'qcow2', '-o', create, path.join(fdir, 'a.qcow2'), '4M'),
        (c, fdir) => writeSequence(c, fdir, { 'lazy-refcounts': option }),
      );
      expect(ours).toEqual(theirs);
    }
  });

  it('refuses lazy-refcounts on a compat=0.10 image with the reference error', async () => {
    const { ours, theirs } = await both(
      (fdir) => qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', path.join(fdir, 'a.qcow2'), '4M'),
      (c, fdir) => writeSequence(c, fdir, { 'lazy-refcounts': true }),
    );
    expect(ours).toEqual(theirs);
    expect(ours.error?.desc).toBe('Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
  });

  it('creates a lazy-refcounts image with blockdev-create that both daemons report alike', async () => {
    const { ours, theirs } = await both(
      (fdir) => fs.writeFileSync(path.join(fdir, 'a.qcow2'), ''),
      async (c, fdir) => {
        const image = path.join(fdir, 'a.qcow2');
        await c.cmd('blockdev-add', { driver: 'file', 'node-name': 'f', filename: image });
        await c.cmd('blockdev-create', { 'job-id': 'j', options: { driver: 'qcow2', file: 'f', size: 4 << 20, 'lazy-refcounts': true } });
        for (;;) {
          const ev = await c.waitEvent('JOB_STATUS_CHANGE');
          if (ev.data.status === 'concluded') break;
        }
        await c.cmd('job-dismiss', { id: 'j' });
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: 'f' });
        const img = await nodeImage(c, 'n');
        await c.cmd('blockdev-del', { 'node-name': 'n' });
        await c.cmd('blockdev-del', { 'node-name': 'f' });
        expectClean(image);
        const info = JSON.parse(qemuImg('info', '--output=json', image));
        return { specific: img['format-specific'], dirty: img['dirty-flag'], info: info['format-specific'] };
      },
    );
    expect(ours).toEqual(theirs);
    expect(ours.specific.data['lazy-refcounts']).toBe(true);
  });

  it('repairs an image the reference left dirty with refcounts below their references, keeping its data', async () => {
    // QEMU's test 039: a lazy-refcounts write, then the process dies before the refcount block is written.
    const image = path.join(dir, 'killed.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', image, '64M');
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', image], { stdio: 'ignore' });
    expect(headerDirty(image)).toBe(true);
    const before = spawnSync('qemu-img', ['check', image], { encoding: 'utf8' });
    expect(before.status).toBe(2);
    expect(before.stderr).toContain('refcount=0 reference=1');
    const d = await startDaemon('qbd', [], { dir: tempDir('qbd-lazy-repair-') });
    daemons.push(d);
    const c = await d.client();
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: { driver: 'file', filename: image } });
    const socket = path.join(dir, 'repair.sock');
    await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    await c.cmd('block-export-add', { type: 'nbd', id: 'e2', 'node-name': 'n', writable: true });
    // Repaired on first use, then dirty again from the first allocating write until qbd quits.
    qemuIoNbd(socket, 'read -P 0x5a 0 512', 'write -P 0x6b 1M 4k');
    expect((await nodeImage(c, 'n'))['dirty-flag']).toBe(true);
    await c.cmd('quit');
    await d.stop();
    expect(headerDirty(image)).toBe(false);
    expectClean(image);
    execFileSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x5a 0 512', '-c', 'read -P 0x6b 1M 4k', image], { stdio: 'ignore' });
  });

  it('clears the dirty flag of an image that becomes a read-only backing node after blockdev-snapshot', async () => {
    const { ours, theirs } = await both(
      (fdir) => {
        qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path.join(fdir, 'a.qcow2'), '4M');
        qemuImg('create', '-f', 'qcow2', path.join(fdir, 'top.qcow2'), '4M');
      },
      async (c, fdir) => {
        const image = path.join(fdir, 'a.qcow2');
        const socket = path.join(fdir, 'nbd.sock');
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', file: { driver: 'file', filename: image } });
        await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
        await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', writable: true });
        qemuIoNbd(socket, 'write -P 1 0 64k');
        const before = { flag: (await nodeImage(c, 'n'))['dirty-flag'], header: headerDirty(image) };
        await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', backing: null, file: { driver: 'file', filename: path.join(fdir, 'top.qcow2') } });
        await c.cmd('blockdev-snapshot', { node: 'n', overlay: 'top' });
        const after = { flag: (await nodeImage(c, 'n'))['dirty-flag'], header: headerDirty(image) };
        await deleteExport(c, 'e');
        expectClean(image);
        return { before, after };
      },
    );
    expect(ours).toEqual(theirs);
    expect(theirs.after).toEqual({ flag: false, header: false });
  });

  it('keeps a dirty image opened read-only dirty until its refcounts are rebuilt, across read-only switches', async () => {
    const image = path.join(dir, 'killed-ro.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', image, '64M');
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', image], { stdio: 'ignore' });
    const d = await startDaemon('qbd', [], { dir: tempDir('qbd-lazy-ro-') });
    daemons.push(d);
    const c = await d.client();
    const file = { driver: 'file', filename: image };
    const reopen = (readOnly: boolean) => c.cmd('blockdev-reopen', { options: [{ driver: 'qcow2', 'node-name': 'n', 'read-only': readOnly, file }] });
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n', 'read-only': true, file });
    const socket = path.join(dir, 'ro.sock');
    await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    // A read loads the image's tables while it is read-only: no repair then.
    await c.cmd('block-export-add', { type: 'nbd', id: 'r', 'node-name': 'n' });
    execFileSync('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x5a 0 512', `nbd+unix:///n?socket=${socket}`], { stdio: 'ignore' });
    await deleteExport(c, 'r');
    // Read-write and back without a write: nothing rebuilt the refcounts, so the image must stay dirty.
    // (qemu-storage-daemon 7.2 clears the bit here and leaves refcount errors behind.)
    await reopen(false);
    await reopen(true);
    expect(headerDirty(image)).toBe(true);
    expect((await nodeImage(c, 'n'))['dirty-flag']).toBe(true);
    // The first write after the switch rebuilds them.
    await reopen(false);
    await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', writable: true });
    qemuIoNbd(socket, 'write -P 0x6b 1M 4k');
    await deleteExport(c, 'e');
    await reopen(true);
    expect(headerDirty(image)).toBe(false);
    expect((await nodeImage(c, 'n'))['dirty-flag']).toBe(false);
    await c.cmd('quit');
    await d.stop();
    expectClean(image);
    execFileSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0x5a 0 512', '-c', 'read -P 0x6b 1M 4k', image], { stdio: 'ignore' });
  });
});
