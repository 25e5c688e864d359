/**
 * block-commit, block-stream and change-backing-file against real images:
 * chains of three or four qcow2 layers (or a raw base) made with qemu-img,
 * random data in every layer written by qemu-io, a flattened copy made with
 * `qemu-img convert` before the job; after it, `qemu-img compare` finds the
 * result equal to the copy, `qemu-img check` finds every image clean, and
 * `qemu-img info --backing-chain` shows the relinked chain. The same
 * sessions run against the reference give the same replies and events.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, waitFor, type Flavour } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-img') && toolAvailable('qemu-io') && toolAvailable('qemu-storage-daemon');
const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** A small deterministic generator, so a failing case can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

interface ChainSpec {
  layers: number;
  /** 'sparse': a few random extents per layer; 'full': every layer written everywhere; 'full-base': the base only. */
  fill: 'sparse' | 'full' | 'full-base';
  rawBase?: boolean;
  seed: number;
}

/** Makes base, l1, l2, … (top last); returns the file names, bottom first. */
function makeChain(dir: string, spec: ChainSpec): string[] {
  const rnd = random(spec.seed);
  const files: string[] = [];
  for (let i = 0; i < spec.layers; i++) {
    const raw = i === 0 && spec.rawBase;
    const file = path.join(dir, i === 0 ? (raw ? 'base.raw' : 'base.qcow2') : `l${i}.qcow2`);
    const args = ['create', '-q', '-f', raw ? 'raw' : 'qcow2'];
    if (i > 0) args.push('-b', files[i - 1]!, '-F', i === 1 && spec.rawBase ? 'raw' : 'qcow2');
    execFileSync('qemu-img', [...args, file, String(SIZE)]);
    const cmds: string[] = [];
    if (spec.fill === 'full' || (spec.fill === 'full-base' && i === 0)) {
      cmds.push(`write -P ${0x10 + i} 0 ${SIZE}`);
      // Holes punched into the full layer: zero clusters above data below.
      cmds.push(`write -z ${Math.floor(rnd() * 100) * 64 * 1024} 128k`);
    } else {
      for (let k = 0; k < 6; k++) {
        const off = Math.floor(rnd() * (SIZE / 4096 - 64)) * 4096;
        const len = (1 + Math.floor(rnd() * 48)) * 4096;
        cmds.push(rnd() < 0.2 ? `write -z ${off} ${len}` : `write -P ${Math.floor(rnd() * 255) + 1} ${off} ${len}`);
      }
    }
    execFileSync('qemu-io', ['-f', raw ? 'raw' : 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
    files.push(file);
  }
  return files;
}

function flatten(file: string, out: string): void {
  execFileSync('qemu-img', ['convert', '-O', 'raw', file, out]);
}

function sameContent(file: string, flat: string): boolean {
  return spawnSync('qemu-img', ['compare', '-q', '-F', 'raw', file, flat]).status === 0;
}

function checkClean(file: string): void {
  if (!file.endsWith('.qcow2')) return;
  const r = spawnSync('qemu-img', ['check', file], { encoding: 'utf8' });
  expect(r.status, `${file}: ${r.stdout}${r.stderr}`).toBe(0);
}

/** The backing file names of the chain from `file` down, as qemu-img reads them from the images. */
function chainOf(file: string): string[] {
  const out = execFileSync('qemu-img', ['info', '--output=json', '--backing-chain', file], { encoding: 'utf8' });
  return (JSON.parse(out) as Array<{ filename: string }>).map((i) => path.basename(i.filename));
}

async function waitJobGone(c: QmpTestClient, id: string): Promise<void> {
  await waitFor(() => c.events.some((e: any) => e.event === 'JOB_STATUS_CHANGE' && e.data.id === id && e.data.status === 'null'), 60_000, `job ${id} to end`);
}

/** The node names of the chain below `top`, top first (format nodes only). */
async function chainNodes(c: QmpTestClient): Promise<Record<string, string>> {
  const nodes = (await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; drv: string; file: string }>;
  const out: Record<string, string> = {};
  for (const n of nodes) if (n.drv !== 'file') out[path.basename(n.file)] = n['node-name'];
  return out;
}

async function withDaemon<T>(flavour: Flavour, dir: string, top: string, fn: (c: QmpTestClient, nodes: Record<string, string>) => Promise<T>): Promise<T> {
  const d = await startDaemon(flavour, [], { dir });
  const c = await d.client();
  try {
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'top', file: { driver: 'file', filename: top } });
    return await fn(c, await chainNodes(c));
  } finally {
    c.close();
    await d.stop();
  }
}

function newCase(spec: ChainSpec): { dir: string; files: string[]; flat: string } {
  const dir = tempDir('qbd-commit-stream-');
  dirs.push(dir);
  const files = makeChain(dir, spec);
  const flat = path.join(dir, 'flat.raw');
  flatten(files.at(-1)!, flat);
  return { dir, files, flat };
}

describe.skipIf(!haveTools && !process.env.CI)('block-stream and block-commit on qcow2 chains', () => {
  for (const fill of ['sparse', 'full'] as const) {
    it(`streams a four-layer ${fill} chain into the top down to the base, and relinks it`, async () => {
      const { files, flat } = newCase({ layers: 4, fill, seed: fill === 'sparse' ? 11 : 12 });
      const top = files[3]!;
      await withDaemon('qbd', path.dirname(top), top, async (c, nodes) => {
        await c.cmd('block-stream', { 'job-id': 's', device: 'top', 'base-node': nodes['base.qcow2'] });
        await waitJobGone(c, 's');
        const done = c.events.find((e: any) => e.event === 'BLOCK_JOB_COMPLETED');
        expect(done.data).toEqual({ type: 'stream', device: 's', len: SIZE, offset: SIZE, speed: 0 });
        // The removed layers are closed: nothing uses them any more.
        expect(Object.keys(await chainNodes(c)).sort()).toEqual(['base.qcow2', 'l3.qcow2']);
      });
      expect(chainOf(top)).toEqual(['l3.qcow2', 'base.qcow2']);
      expect(sameContent(top, flat)).toBe(true);
      files.forEach(checkClean);
    });

    it(`commits the middle of a four-layer ${fill} chain into the base, and relinks the overlay`, async () => {
      const { files, flat } = newCase({ layers: 4, fill, seed: fill === 'sparse' ? 21 : 22 });
      const top = files[3]!;
      await withDaemon('qbd', path.dirname(top), top, async (c, nodes) => {
        await c.cmd('block-commit', { 'job-id': 'c', device: 'top', 'top-node': nodes['l2.qcow2'], 'base-node': nodes['base.qcow2'] });
        await waitJobGone(c, 'c');
        expect(c.events.find((e: any) => e.event === 'BLOCK_JOB_COMPLETED').data).toEqual({ type: 'commit', device: 'c', len: SIZE, offset: SIZE, speed: 0 });
        expect(Object.keys(await chainNodes(c)).sort()).toEqual(['base.qcow2', 'l3.qcow2']);
      });
      expect(chainOf(top)).toEqual(['l3.qcow2', 'base.qcow2']);
      expect(sameContent(top, flat)).toBe(true);
      files.forEach(checkClean);
    });

    it(`commits the active layer of a three-layer ${fill} chain into the base and pivots`, async () => {
      const { files, flat } = newCase({ layers: 3, fill, seed: fill === 'sparse' ? 31 : 32 });
      const top = files[2]!;
      await withDaemon('qbd', path.dirname(top), top, async (c) => {
        await c.cmd('block-commit', { 'job-id': 'a', device: 'top' });
        await c.waitEvent('BLOCK_JOB_READY', 60_000);
        await c.cmd('job-complete', { id: 'a' });
        await waitJobGone(c, 'a');
        expect(c.events.find((e: any) => e.event === 'BLOCK_JOB_COMPLETED').data.type).toBe('commit');
      });
      // The base alone now holds what the whole chain showed.
      expect(sameContent(files[0]!, flat)).toBe(true);
      expect(sameContent(top, flat)).toBe(true);
      files.forEach(checkClean);
    });
  }

  it('streams and commits over a raw base', async () => {
    const s = newCase({ layers: 3, fill: 'sparse', rawBase: true, seed: 41 });
    await withDaemon('qbd', s.dir, s.files[2]!, async (c) => {
      await c.cmd('block-stream', { 'job-id': 's', device: 'top', base: s.files[0] });
      await waitJobGone(c, 's');
    });
    expect(chainOf(s.files[2]!)).toEqual(['l2.qcow2', 'base.raw']);
    expect(sameContent(s.files[2]!, s.flat)).toBe(true);
    s.files.forEach(checkClean);

    const m = newCase({ layers: 3, fill: 'sparse', rawBase: true, seed: 42 });
    await withDaemon('qbd', m.dir, m.files[2]!, async (c, nodes) => {
      await c.cmd('block-commit', { 'job-id': 'c', device: 'top', 'top-node': nodes['l1.qcow2'], 'backing-file': 'base.raw' });
      await waitJobGone(c, 'c');
    });
    expect(chainOf(m.files[2]!)).toEqual(['l2.qcow2', 'base.raw']);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', m.files[2]!], { encoding: 'utf8' }));
    expect([info['backing-filename'], info['backing-filename-format']]).toEqual(['base.raw', 'raw']);
    expect(sameContent(m.files[2]!, m.flat)).toBe(true);
    m.files.forEach(checkClean);
  });

  it('grows a base shorter than the top before committing into it', async () => {
    for (const active of [false, true]) {
      const dir = tempDir('qbd-commit-grow-');
      dirs.push(dir);
      const [base, mid, top, flat] = ['base.qcow2', 'l1.qcow2', 'l2.qcow2', 'flat.raw'].map((f) => path.join(dir, f)) as [string, string, string, string];
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE / 2)]);
      execFileSync('qemu-io', ['-c', `write -P 1 0 ${SIZE / 2}`, base], { stdio: 'ignore' });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid, String(SIZE)]);
      execFileSync('qemu-io', ['-c', `write -P 2 ${SIZE / 2 - MiB} ${2 * MiB}`, mid], { stdio: 'ignore' });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top, String(SIZE)]);
      execFileSync('qemu-io', ['-c', `write -P 3 ${SIZE - MiB} ${MiB}`, top], { stdio: 'ignore' });
      flatten(top, flat);
      await withDaemon('qbd', dir, top, async (c, nodes) => {
        await c.cmd('block-commit', { 'job-id': 'c', device: 'top', ...(active ? {} : { 'top-node': nodes['l1.qcow2'] }) });
        if (active) {
          await c.waitEvent('BLOCK_JOB_READY', 60_000);
          await c.cmd('job-complete', { id: 'c' });
        }
        await waitJobGone(c, 'c');
      });
      expect(JSON.parse(execFileSync('qemu-img', ['info', '--output=json', base], { encoding: 'utf8' }))['virtual-size']).toBe(SIZE);
      expect(sameContent(active ? base : top, flat)).toBe(true);
      [base, mid, top].forEach(checkClean);
    }
  });

  it('streams the whole chain: the top keeps no backing file', async () => {
    const { files, flat } = newCase({ layers: 3, fill: 'sparse', seed: 51 });
    await withDaemon('qbd', path.dirname(files[2]!), files[2]!, async (c) => {
      await c.cmd('block-stream', { 'job-id': 's', device: 'top' });
      await waitJobGone(c, 's');
    });
    expect(chainOf(files[2]!)).toEqual(['l2.qcow2']);
    expect(sameContent(files[2]!, flat)).toBe(true);
    files.forEach(checkClean);
  });

  it('leaves a consistent chain when a slow commit or stream is cancelled', async () => {
    for (const job of ['block-commit', 'block-stream'] as const) {
      // Each job must have data to copy, or it ends before the cancel arrives: a stream copies what lies below the top.
      const { files, flat } = newCase({ layers: 3, fill: job === 'block-commit' ? 'full' : 'full-base', seed: 61 });
      await withDaemon('qbd', path.dirname(files[2]!), files[2]!, async (c, nodes) => {
        const args = job === 'block-commit' ? { 'top-node': nodes['l1.qcow2'] } : {};
        await c.cmd(job, { 'job-id': 'j', device: 'top', speed: 1024 * 1024, ...args });
        await waitFor(() => c.events.some((e: any) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'running'));
        await c.cmd('block-job-cancel', { device: 'j' });
        await waitJobGone(c, 'j');
        expect(c.events.some((e: any) => e.event === 'BLOCK_JOB_CANCELLED')).toBe(true);
        expect(Object.keys(await chainNodes(c)).sort()).toEqual(['base.qcow2', 'l1.qcow2', 'l2.qcow2']);
      });
      expect(chainOf(files[2]!)).toEqual(['l2.qcow2', 'l1.qcow2', 'base.qcow2']);
      expect(sameContent(files[2]!, flat)).toBe(true);
      files.forEach(checkClean);
    }
  });

  it('keeps every write a client makes while the stream copies into the same image', async () => {
    const { dir, files, flat } = newCase({ layers: 3, fill: 'full-base', seed: 91 });
    const sock = path.join(dir, 'nbd.sock');
    const rnd = random(92);
    const writes: string[] = [];
    for (let k = 0; k < 40; k++) {
      const off = Math.floor(rnd() * (SIZE / 512 - 256)) * 512;
      const len = (1 + Math.floor(rnd() * 256)) * 512;
      writes.push(`aio_write -P ${k + 100} ${off} ${len}`);
    }
    await withDaemon('qbd', dir, files[2]!, async (c) => {
      await c.cmd('nbd-server-start', { addr: { type: 'unix', data: { path: sock } } });
      await c.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'top', writable: true });
      // Slow enough that the writes meet the copies.
      await c.cmd('block-stream', { 'job-id': 's', device: 'top', speed: 4 * MiB });
      const io = spawnSync('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w, '-c', 'sleep 20']), '-c', 'aio_flush', `nbd+unix:///top?socket=${sock}`], { encoding: 'utf8' });
      expect(io.status, io.stderr).toBe(0);
      await waitJobGone(c, 's');
      expect(c.events.find((e: any) => e.event === 'BLOCK_JOB_COMPLETED').data.error).toBeUndefined();
    });
    // What the image must show: the chain's content with the client's writes on top.
    execFileSync('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w.replace('aio_write', 'write')]), flat], { stdio: 'ignore' });
    expect(chainOf(files[2]!)).toEqual(['l2.qcow2']);
    expect(sameContent(files[2]!, flat)).toBe(true);
    files.forEach(checkClean);
  });

  it('change-backing-file rewrites the name an image records and keeps it clean', async () => {
    const { files } = newCase({ layers: 3, fill: 'sparse', seed: 71 });
    await withDaemon('qbd', path.dirname(files[2]!), files[2]!, async (c, nodes) => {
      await c.cmd('change-backing-file', { device: 'top', 'image-node-name': nodes['l1.qcow2'], 'backing-file': 'base.qcow2' });
      await c.cmd('change-backing-file', { device: 'top', 'image-node-name': 'top', 'backing-file': 'l1.qcow2' });
    });
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', files[1]!], { encoding: 'utf8' }));
    // As the reference: the image's own format is recorded as the backing format.
    expect([info['backing-filename'], info['backing-filename-format']]).toEqual(['base.qcow2', 'qcow2']);
    expect(chainOf(files[2]!)).toEqual(['l2.qcow2', 'l1.qcow2', 'base.qcow2']);
    files.forEach(checkClean);
  });
});

/**
 * One session's replies and, apart, its events, with names that differ
 * between runs masked. The lists are apart because when an event leaves
 * relative to a reply depends on timing in both daemons.
 */
async function transcript(flavour: Flavour, script: (c: QmpTestClient, nodes: Record<string, string>, log: (s: string) => void) => Promise<void>): Promise<{ replies: string[]; events: string[] }> {
  const { files } = newCase({ layers: 3, fill: 'sparse', seed: 81 });
  const dir = path.dirname(files[2]!);
  const replies: string[] = [];
  let events: string[] = [];
  await withDaemon(flavour, dir, files[2]!, async (c, nodes) => {
    const renamed: Record<string, string> = {};
    for (const [file, node] of Object.entries(nodes)) renamed[node] = file;
    const mask = (s: string) => s.split(dir).join('DIR').replace(/#block\d+/g, (m) => renamed[m] ?? '#blockN');
    try {
      await script(c, nodes, (s) => replies.push(mask(s)));
    } finally {
      events = c.events.map((e: any) => mask(`${e.event} ${JSON.stringify(e.data)}`));
      if (process.env.QBD_TEST_DEBUG) console.log(flavour, replies, events);
    }
  });
  return { replies, events };
}

async function run(c: QmpTestClient, log: (s: string) => void, command: string, args: Record<string, unknown>): Promise<void> {
  const r = await c.execute(command, args);
  log(`${command} -> ${JSON.stringify(r.error ?? r.return)}`);
}

describe.skipIf(!haveTools && !process.env.CI)('commit and stream beside the reference', () => {
  it('answers bad arguments with the reference errors', async () => {
    const script = async (c: QmpTestClient, n: Record<string, string>, log: (s: string) => void) => {
      const [base, l1] = [n['base.qcow2']!, n['l1.qcow2']!];
      const cases: Array<[string, Record<string, unknown>]> = [
        ['block-commit', { device: 'nope' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': 'top', top: 'x' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': 'nope' }],
        ['block-commit', { 'job-id': 'j', device: l1, 'top-node': 'top' }],
        ['block-commit', { 'job-id': 'j', device: 'top', top: 'nope.qcow2' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'base-node': base, base: 'x' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': l1, 'base-node': 'top' }],
        ['block-commit', { 'job-id': 'j', device: 'top', base: 'nope.qcow2' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': base }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'backing-file': 'x' }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': l1, 'base-node': l1 }],
        ['block-commit', { 'job-id': 'j', device: 'top', 'top-node': l1, 'filter-node-name': 'top' }],
        ['block-commit', { device: 'top', 'top-node': l1 }],
        ['block-commit', { device: 'top' }],
        ['block-stream', { 'job-id': 'j', device: 'top', base: 'x', 'base-node': base }],
        ['block-stream', { 'job-id': 'j', device: 'top', base: 'x', bottom: l1 }],
        ['block-stream', { 'job-id': 'j', device: 'top', bottom: l1, 'base-node': base }],
        ['block-stream', { 'job-id': 'j', device: 'nope' }],
        ['block-stream', { 'job-id': 'j', device: 'top', base: 'nope.qcow2' }],
        ['block-stream', { 'job-id': 'j', device: 'top', 'base-node': 'top' }],
        ['block-stream', { 'job-id': 'j', device: l1, 'base-node': 'top' }],
        ['block-stream', { 'job-id': 'j', device: 'top', bottom: 'nope' }],
        ['block-stream', { 'job-id': 'j', device: l1, bottom: 'top' }],
        ['block-stream', { 'job-id': 'j', device: 'top', 'backing-file': 'x' }],
        ['block-stream', { 'job-id': 'j', device: 'top', speed: -1 }],
        ['change-backing-file', { device: 'top', 'image-node-name': base, 'backing-file': 'x' }],
        ['change-backing-file', { device: l1, 'image-node-name': base, 'backing-file': 'x' }],
      ];
      for (const [cmd, args] of cases) await run(c, log, cmd, args);
      // A node a running job uses is busy for the other job.
      await run(c, log, 'block-stream', { 'job-id': 'slow', device: 'top', speed: 1024, 'auto-dismiss': false });
      await run(c, log, 'block-commit', { 'job-id': 'j2', device: 'top', 'top-node': l1 });
      await run(c, log, 'block-commit', { 'job-id': 'j2', device: 'top' });
      await run(c, log, 'block-job-complete', { device: 'slow' });
      await run(c, log, 'job-dismiss', { id: 'slow' });
      await run(c, log, 'block-job-cancel', { device: 'slow' });
      await waitFor(() => c.events.some((e: any) => e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'concluded'), 20_000);
      await run(c, log, 'query-block-jobs', {});
      await run(c, log, 'job-dismiss', { id: 'slow' });
    };
    // How far the slow stream got before the cancel depends on timing.
    const progress = (t: { replies: string[]; events: string[] }) => JSON.parse(JSON.stringify(t).replace(/\\"offset\\":\d+/g, '\\"offset\\":N'));
    const ours = progress(await transcript('qbd', script));
    const theirs = progress(await transcript('qsd', script));
    expect(ours).toEqual(theirs);
  });

  it('gives the same events and job queries for stream, intermediate and active commit', async () => {
    const script = async (c: QmpTestClient, n: Record<string, string>, log: (s: string) => void) => {
      await run(c, log, 'block-commit', { 'job-id': 'c', device: 'top', 'top-node': n['l1.qcow2'], 'auto-finalize': false });
      await waitFor(() => c.events.some((e: any) => e.event === 'BLOCK_JOB_PENDING'), 30_000);
      await run(c, log, 'query-jobs', {});
      await run(c, log, 'query-block-jobs', {});
      await run(c, log, 'block-job-complete', { device: 'c' });
      await run(c, log, 'job-finalize', { id: 'c' });
      await run(c, log, 'block-commit', { 'job-id': 'a', device: 'top' });
      await waitFor(() => c.events.some((e: any) => e.event === 'BLOCK_JOB_READY'), 30_000);
      await run(c, log, 'query-block-jobs', {});
      await run(c, log, 'block-job-pause', { device: 'a' });
      await run(c, log, 'query-jobs', {});
      await run(c, log, 'block-job-resume', { device: 'a' });
      await run(c, log, 'job-finalize', { id: 'a' });
      await run(c, log, 'job-complete', { id: 'a' });
      await waitFor(() => c.events.some((e: any) => e.event === 'BLOCK_JOB_COMPLETED' && e.data.device === 'a'), 30_000);
      await waitFor(() => c.events.some((e: any) => e.event === 'JOB_STATUS_CHANGE' && e.data.id === 'a' && e.data.status === 'null'), 30_000);
      await run(c, log, 'query-jobs', {});
    };
    const ours = await transcript('qbd', script);
    const theirs = await transcript('qsd', script);
    expect(ours).toEqual(theirs);
  });
});
