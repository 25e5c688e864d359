/**
 * Crash safety: a child process writes to a qcow2 image through qbd's block
 * layer (allocating all the time, flushing now and then) and is killed with
 * SIGKILL at a random moment; some of its writes are discarded or zeroed
 * again, so clusters are freed and reused too. Afterwards `qemu-img check` may find leaks but
 * never corruption, and every write acknowledged before a flush that
 * completed reads back.
 *
 * A lazy-refcounts image is left dirty instead: its refcounts may be off
 * either way (that is what the dirty bit says), but nothing else may be
 * wrong, and qbd, qemu-io and `qemu-img check -r all` each repair it into a
 * clean image that still holds every flushed write.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { check, dist, prng, qemuImg, rawOf } from './helpers';

const SLOT = 64 * 1024;
const SLOTS = 512;

/**
 * Write `i` of a run: a fresh slot (never written twice), a random range
 * inside it, a pattern from `i`. Source text, so the child runs the same code.
 */
const SHARED = `
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
function writeOf(seed, i) {
  const rnd = prng(seed * 100003 + i);
  const slot = (i * 263 + seed) % ${SLOTS};
  const len = 1 + Math.floor(rnd() * (${SLOT} - 1));
  const at = Math.floor(rnd() * (${SLOT} - len));
  const data = Buffer.alloc(len, (i % 250) + 1);
  if (len >= 4) data.writeUInt32LE(i, 0);
  return { offset: slot * ${SLOT} + at, data };
}
`;
const writeOf = new Function(`${SHARED}; return writeOf;`)() as (seed: number, i: number) => { offset: number; data: Buffer };

const CHILD = `
const [dist, image, seedText, mode] = process.argv.slice(2);
const seed = Number(seedText);
const { blockdevAdd, blockdevDel } = require(dist + '/block/global-state/blockdev.js');
const { findNode } = require(dist + '/block/global-state/graph.js');
const { getDefaultContext } = require(dist + '/block/global-state/io-contexts.js');
const proto = require(dist + '/block/common/io-context-protocol.js');
${SHARED}
const req = (r) => findNode('c').ctx.channel.request(proto.nodeRequest, { nodeName: 'c', request: r });
setInterval(() => {}, 1000);
(async () => {
  getDefaultContext();
  await blockdevAdd({ driver: 'qcow2', 'node-name': 'c', discard: 'unmap', 'l2-cache-size': 16384, 'refcount-cache-size': 8192, file: { driver: 'file', filename: image } });
  if (mode === 'reopen') {
    // Opening a dirty image read-write repairs it; closing it cleanly leaves it clean.
    await req({ op: 'read', offset: 0, bytes: 512 });
    await blockdevDel('c');
    process.stdout.write('closed\\n');
    process.exit(0);
  }
  process.stdout.write('ready\\n');
  let acked = [];
  let next = 0;
  const worker = async () => {
    while (next < ${SLOTS}) {
      const i = next++;
      const w = writeOf(seed, i);
      await req({ op: 'write', offset: w.offset, data: w.data });
      if (i % 4 === 3) {
        // Scratch slots: written, then discarded or zeroed (freeing clusters); never checked.
        const slotStart = w.offset - (w.offset % ${SLOT});
        if (i % 8 === 3) await req({ op: 'discard', offset: slotStart, bytes: ${SLOT} });
        else await req({ op: 'write-zeroes', offset: slotStart, bytes: ${SLOT}, flags: { mayUnmap: true } });
      } else {
        acked.push(i);
      }
      if (i % 16 === 15) {
        const covered = acked;
        acked = [];
        await req({ op: 'flush' });
        process.stdout.write('durable ' + covered.join(' ') + '\\n');
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  process.stdout.write('done\\n');
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
`;

let dir: string;
beforeAll(() => {
  dir = tempDir('qbd-qcow2-crash-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function childScript(): string {
  const script = path.join(dir, 'child.js');
  fs.writeFileSync(script, CHILD);
  return script;
}

async function crashRound(seed: number, lazy = false): Promise<{ durable: number[]; image: string }> {
  const image = path.join(dir, `crash-${seed}${lazy ? '-lazy' : ''}.qcow2`);
  qemuImg('create', '-f', 'qcow2', '-o', `cluster_size=4096${lazy ? ',lazy_refcounts=on' : ''}`, image, String(SLOTS * SLOT));
  const script = childScript();
  const child = spawn(process.execPath, [script, dist, image, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const durable: number[] = [];
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const rnd = prng(seed);
  await new Promise<void>((resolve, reject) => {
    let killTimer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d) => {
      out += d;
      if (!killTimer && out.includes('ready\n')) {
        killTimer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 100 + Math.floor(rnd() * 900));
      }
      if (out.includes('done\n')) {
        clearTimeout(killTimer);
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.on('exit', () => (err ? reject(new Error(err)) : resolve()));
  });
  await exited;
  // Only whole lines count: a line cut by the kill was not reported.
  for (const line of out.split('\n').slice(0, -1)) {
    if (line.startsWith('durable ')) durable.push(...line.slice(8).split(' ').map(Number));
  }
  return { durable, image };
}

describe.skipIf(!toolAvailable('qemu-img'))('crash safety', () => {
  it('leaves no corruption and keeps every flushed write after SIGKILL at random moments', async () => {
    let checkedWrites = 0;
    for (const seed of [1, 2, 3, 4]) {
      const { durable, image } = await crashRound(seed);
      const c = check(image);
      expect([0, 3], c.text).toContain(c.status);
      expect(c.report['corruptions'] ?? 0).toBe(0);
      const raw = rawOf(image, dir);
      for (const i of durable) {
        const w = writeOf(seed, i);
        expect(raw.subarray(w.offset, w.offset + w.data.length).equals(w.data), `write ${i} of round ${seed}`).toBe(true);
      }
      checkedWrites += durable.length;
      if (process.env.QBD_CRASH_DEBUG) console.log(`round ${seed}: check ${c.status}, ${durable.length} durable writes`);
    }
    expect(checkedWrites).toBeGreaterThan(0);
  });
});

/** Incompatible bit 0 of the header on disk. */
function headerDirty(image: string): boolean {
  const b = Buffer.alloc(8);
  const fd = fs.openSync(image, 'r');
  try {
    fs.readSync(fd, b, 0, 8, 72);
  } finally {
    fs.closeSync(fd);
  }
  return (b.readBigUInt64BE(0) & 1n) !== 0n;
}

/**
 * What `qemu-img check` may find on a dirty image: refcounts off either way
 * (and the COPIED flags that follow from them), nothing else.
 */
function onlyRefcountProblems(image: string): string[] {
  const r = spawnSync('qemu-img', ['check', image], { encoding: 'utf8' });
  const allowed = [
    /^ERROR cluster \d+ refcount=\d+ reference=\d+$/,
    /^Leaked cluster \d+ refcount=\d+ reference=\d+$/,
    /^ERROR OFLAG_COPIED data cluster: l2_entry=[0-9a-f]+ refcount=\d+$/,
    /^ERROR OFLAG_COPIED L2 cluster: l1_index=\d+ l1_entry=[0-9a-f]+ refcount=\d+$/,
    /^\d+ errors were found on the image\.$/,
    /^\d+ leaked clusters were found on the image\.$/,
    /^(Data may be corrupted, or further writes to the image may corrupt it\.|This means waste of disk space, but no harm to data\.|No errors were found on the image\.)$/,
    /^\d+\/\d+ = .* allocated, .* fragmented, .* compressed clusters$/,
    /^Image end offset: \d+$/,
    /^$/,
  ];
  expect([0, 2, 3], r.stdout + r.stderr).toContain(r.status);
  return (r.stdout + r.stderr).split('\n').filter((line) => !allowed.some((re) => re.test(line)));
}

function expectDurable(image: string, seed: number, durable: number[]): void {
  const raw = rawOf(image, dir);
  for (const i of durable) {
    const w = writeOf(seed, i);
    expect(raw.subarray(w.offset, w.offset + w.data.length).equals(w.data), `write ${i} of round ${seed} in ${path.basename(image)}`).toBe(true);
  }
}

describe.skipIf(!toolAvailable('qemu-img') || !toolAvailable('qemu-io'))('crash safety with lazy refcounts', () => {
  it('leaves a dirty image that only needs its refcounts rebuilt, and that qbd, qemu-io and qemu-img repair', async () => {
    let checkedWrites = 0;
    for (const seed of [5, 6, 7]) {
      const { durable, image } = await crashRound(seed, true);
      expect(headerDirty(image)).toBe(true);
      expect(onlyRefcountProblems(image)).toEqual([]);
      // Reads do not depend on refcounts: every flushed write is there before any repair.
      expectDurable(image, seed, durable);

      const byQbd = `${image}.qbd`;
      const byQemuIo = `${image}.qemu-io`;
      const byCheck = `${image}.check`;
      for (const copy of [byQbd, byQemuIo, byCheck]) fs.copyFileSync(image, copy);
      const reopened = spawnSync(process.execPath, [childScript(), dist, byQbd, String(seed), 'reopen'], { encoding: 'utf8' });
      expect(reopened.stdout, reopened.stderr).toContain('closed');
      // QEMU repairs a dirty image when it opens it read-write; qemu-img check -r all does it explicitly.
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read 0 512', byQemuIo], { stdio: 'ignore' });
      execFileSync('qemu-img', ['check', '-r', 'all', byCheck], { stdio: 'ignore' });
      for (const repaired of [byQbd, byQemuIo, byCheck]) {
        expect(headerDirty(repaired), repaired).toBe(false);
        const c = check(repaired);
        expect(c.status, c.text).toBe(0);
        expectDurable(repaired, seed, durable);
      }
      checkedWrites += durable.length;
      if (process.env.QBD_CRASH_DEBUG) console.log(`lazy round ${seed}: check ${check(image).status}, ${durable.length} durable writes`);
    }
    expect(checkedWrites).toBeGreaterThan(0);
  });
});
