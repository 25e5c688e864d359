/**
 * Crash safety: a child process writes to a qcow2 image through qbd's block
 * layer (allocating all the time, flushing now and then) and is killed with
 * SIGKILL at a random moment; some of its writes are discarded or zeroed
 * again, so clusters are freed and reused too. Afterwards `qemu-img check` may find leaks but
 * never corruption, and every write acknowledged before a flush that
 * completed reads back.
 */
import { spawn } from 'node:child_process';
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
const [dist, image, seedText] = process.argv.slice(2);
const seed = Number(seedText);
const { blockdevAdd } = require(dist + '/block/global-state/blockdev.js');
const { findNode } = require(dist + '/block/global-state/graph.js');
const { getDefaultContext } = require(dist + '/block/global-state/io-contexts.js');
const proto = require(dist + '/block/common/io-context-protocol.js');
${SHARED}
const req = (r) => findNode('c').ctx.channel.request(proto.nodeRequest, { nodeName: 'c', request: r });
setInterval(() => {}, 1000);
(async () => {
  getDefaultContext();
  await blockdevAdd({ driver: 'qcow2', 'node-name': 'c', discard: 'unmap', 'l2-cache-size': 16384, 'refcount-cache-size': 8192, file: { driver: 'file', filename: image } });
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

async function crashRound(seed: number): Promise<{ durable: number[]; image: string }> {
  const image = path.join(dir, `crash-${seed}.qcow2`);
  qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4096', image, String(SLOTS * SLOT));
  const script = path.join(dir, 'child.js');
  fs.writeFileSync(script, CHILD);
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
