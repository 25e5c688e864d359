/**
 * Mirror and backup inside one process, with writes arriving through the
 * I/O API while the job runs: the mirror's target equals the source once
 * the job completes (it converges under writes, in both copy modes), and
 * the backup's target equals the source as it was when the job started.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';

import { addEventSink, blockdevAdd, closeAllNodes, dist, findNode, getDefaultContext, removeEventSink, request, stopAllContexts } from '../helpers/in-process-block';

/* eslint-disable @typescript-eslint/no-require-imports */
const { startMirror } = require(`${dist}/jobs/mirror.js`);
const { startBackup } = require(`${dist}/jobs/backup.js`);
const { findJob } = require(`${dist}/jobs/job-registry.js`);

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-jobs-io-');
  getDefaultContext();
});
afterAll(async () => {
  await closeAllNodes();
  await stopAllContexts();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function readAll(node: string): Promise<Buffer> {
  const out = Buffer.alloc(SIZE);
  for (let off = 0; off < SIZE; off += 4 * MiB) {
    const { data } = await request(node, { op: 'read', offset: off, bytes: 4 * MiB });
    Buffer.from(data!).copy(out, off);
  }
  return out;
}

/** A deterministic pseudo-random generator, so failures replay. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

async function addRaw(name: string, data?: (buf: Buffer) => void): Promise<void> {
  const file = path.join(dir, `${name}.raw`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, SIZE);
  if (data) {
    const buf = Buffer.alloc(SIZE);
    data(buf);
    // Leave the middle a hole: copies must skip it and still match.
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, buf, 0, 8 * MiB, 0);
    fs.writeSync(fd, buf, 24 * MiB, 8 * MiB, 24 * MiB);
    fs.closeSync(fd);
  }
  await blockdevAdd({ driver: 'raw', 'node-name': name, file: { driver: 'file', filename: file } });
}

function events(): { names: (id: string) => string[]; wait: (name: string, id: string) => Promise<void>; stop: () => void } {
  const seen: Array<{ event: string; data: any }> = [];
  const sink = { sendEvent: (ev: { event: string; data: any }) => seen.push(ev) };
  addEventSink(sink);
  const matches = (e: { event: string; data: any }, id: string) => e.data?.device === id || e.data?.id === id;
  return {
    names: (id) => seen.filter((e) => matches(e, id)).map((e) => (e.event === 'JOB_STATUS_CHANGE' ? e.data.status : e.event)),
    wait: async (name, id) => {
      const deadline = Date.now() + 20_000;
      while (!seen.some((e) => matches(e, id) && (e.event === name || (e.event === 'JOB_STATUS_CHANGE' && e.data.status === name)))) {
        if (Date.now() > deadline) throw new Error(`no ${name} for ${id}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    stop: () => removeEventSink(sink),
  };
}

/** Random writes (plain, zeroes, discards) into `node`, mirrored into `model`, until `stop()` says so. */
async function writeWhile(node: string, model: Buffer, seed: number, stop: () => boolean, minWrites: number): Promise<number> {
  const rnd = prng(seed);
  let n = 0;
  while (n < minWrites || !stop()) {
    const len = rnd() < 0.5 ? 4096 * (1 + Math.floor(rnd() * 16)) : MiB;
    const off = Math.floor((rnd() * (SIZE - len)) / 512) * 512;
    if (rnd() < 0.15) {
      await request(node, { op: 'write-zeroes', offset: off, bytes: len });
      model.fill(0, off, off + len);
    } else {
      const data = Buffer.alloc(len, (n % 250) + 1);
      await request(node, { op: 'write', offset: off, data });
      data.copy(model, off);
    }
    n++;
    // A writer slower than the copy, as background mirroring needs to converge.
    await new Promise((r) => setTimeout(r, 1));
  }
  return n;
}

/** The filter node a job put above `node`. */
function filterAbove(node: string): string {
  const parent = findNode(node).parents.find((e: any) => e.parent.kind === 'node');
  return parent.parent.name;
}

describe('mirror under writes', () => {
  for (const mode of ['background', 'write-blocking'] as const) {
    it(`converges and leaves an exact copy (copy-mode ${mode})`, async () => {
      const ev = events();
      const src = `ms-${mode}`;
      const dst = `md-${mode}`;
      await addRaw(src, (b) => {
        for (let i = 0; i < b.length; i += 4096) b[i] = (i >> 12) & 0xff || 1;
      });
      await addRaw(dst);
      const model = await readAll(src);
      const id = `mirror-${mode}`;
      await startMirror({ 'job-id': id, device: src, target: dst, sync: 'full', 'copy-mode': mode });
      const top = filterAbove(src);
      expect(findNode(top).driver.descriptor.name).toBe('mirror_top');
      let ready = false;
      void ev.wait('BLOCK_JOB_READY', id).then(() => (ready = true));
      // Writes keep coming until READY, and a while after it.
      const writes = await writeWhile(top, model, 7, () => ready, 150);
      await writeWhile(top, model, 8, () => true, 30);
      expect(writes).toBeGreaterThanOrEqual(150);
      findJob(id).complete();
      await ev.wait('null', id);
      expect(ev.names(id)).toEqual(['created', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
      expect(findNode(top)).toBeUndefined();
      expect((await readAll(dst)).equals(model)).toBe(true);
      expect((await readAll(src)).equals(model)).toBe(true);
      ev.stop();
    });
  }

  it('copies nothing before writes with sync=none, and then exactly what was written', async () => {
    const ev = events();
    await addRaw('ns', (b) => b.fill(0x44));
    await addRaw('nd');
    await startMirror({ 'job-id': 'none1', device: 'ns', target: 'nd', sync: 'none' });
    await ev.wait('BLOCK_JOB_READY', 'none1');
    await request(filterAbove('ns'), { op: 'write', offset: MiB, data: Buffer.alloc(8192, 0x99) });
    findJob('none1').complete();
    await ev.wait('null', 'none1');
    const target = await readAll('nd');
    // The dirty granule (64 KiB) around the write is copied, the rest of the target stays untouched.
    const expected = Buffer.alloc(SIZE);
    expected.fill(0x44, MiB, MiB + 65536);
    expected.fill(0x99, MiB, MiB + 8192);
    expect(target.equals(expected)).toBe(true);
    ev.stop();
  });
});

describe('backup under writes', () => {
  it('keeps the source as it was when the job started, whatever is written during the job', async () => {
    const ev = events();
    await addRaw('bs', (b) => {
      for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 0xff;
    });
    await addRaw('bd');
    const atStart = await readAll('bs');
    const model = Buffer.from(atStart);
    await startBackup({ 'job-id': 'pit', device: 'bs', target: 'bd', sync: 'full', speed: 12 * MiB });
    const cbw = filterAbove('bs');
    expect(findNode(cbw).driver.descriptor.name).toBe('copy-before-write');
    let done = false;
    void ev.wait('waiting', 'pit').then(() => (done = true));
    const writes = await writeWhile(cbw, model, 11, () => done, 0);
    expect(writes).toBeGreaterThan(20);
    await ev.wait('null', 'pit');
    expect(ev.names('pit')).toEqual(['created', 'running', 'paused', 'running', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
    expect((await readAll('bd')).equals(atStart)).toBe(true);
    expect((await readAll('bs')).equals(model)).toBe(true);
    ev.stop();
  });

  it('copies old data on write with sync=none, and only that', async () => {
    const ev = events();
    await addRaw('ss', (b) => b.fill(0x31));
    await addRaw('sd');
    await startBackup({ 'job-id': 'fleece', device: 'ss', target: 'sd', sync: 'none' });
    await request('ss', { op: 'write', offset: 0, data: Buffer.alloc(4096, 0x55) });
    findJob('fleece').cancel();
    await ev.wait('null', 'fleece');
    expect(ev.names('fleece')).toContain('BLOCK_JOB_CANCELLED');
    const target = await readAll('sd');
    const expected = Buffer.alloc(SIZE);
    // The whole 64 KiB cluster the write touched was copied, with its old content.
    expected.fill(0x31, 0, 65536);
    expect(target.equals(expected)).toBe(true);
    ev.stop();
  });
});

describe('rate limit', () => {
  it('holds over every window of a second or more', async () => {
    const ev = events();
    await addRaw('rs', (b) => b.fill(0x21));
    await addRaw('rd');
    const speed = 8 * MiB;
    await startMirror({ 'job-id': 'rl', device: 'rs', target: 'rd', sync: 'full', speed });
    const samples: Array<[number, number]> = [];
    const { blockJobOf } = require(`${dist}/jobs/block-job.js`);
    const t0 = performance.now();
    while (performance.now() - t0 < 2500) {
      const bj = blockJobOf('rl');
      bj.syncProgress();
      samples.push([performance.now(), bj.job.progressCurrent]);
      await new Promise((r) => setTimeout(r, 20));
    }
    findJob('rl').cancel();
    await ev.wait('null', 'rl');
    for (const [ta, oa] of samples) {
      for (const [tb, ob] of samples) {
        const secs = (tb - ta) / 1000;
        // Holes count as progress without costing bandwidth; this source has none in the first 8 MiB only.
        if (secs >= 1 && oa >= 0 && ob <= 8 * MiB) expect(ob - oa).toBeLessThanOrEqual(speed * secs * 1.06 + 64 * 1024);
      }
    }
    ev.stop();
  });
});
