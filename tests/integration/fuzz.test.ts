/**
 * A bounded fuzz of a live monitor: 10 000 malformed, mutated or random
 * inputs. Afterwards the daemon still answers on the same connection and its
 * memory has stayed bounded.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemon, type RunningDaemon } from '../helpers/daemons';

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const COMMANDS = ['query-version', 'query-named-block-nodes', 'blockdev-add', 'blockdev-del', 'x-debug-query-block-graph', 'qmp_capabilities', 'query-commands', 'no-such-command', 'x-blockdev-set-iothread'];
const VALUES: unknown[] = [null, true, 0, -1, 2 ** 63, 1.5, '', 'null-co', 'raw', 'n0', [], {}, [1, [2]], { driver: 'null-co' }, 'x'.repeat(300)];

function randomInput(rnd: () => number): string {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const kind = rnd();
  if (kind < 0.25) {
    // Random bytes, including invalid UTF-8, 0xFF resets and NULs.
    return Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256))).toString('latin1');
  }
  const args: Record<string, unknown> = {};
  for (let i = Math.floor(rnd() * 4); i > 0; i--) args[pick(['driver', 'node-name', 'size', 'file', 'read-zeroes', 'iothread', 'flat', 'cache', 'x'])] = pick(VALUES);
  if (rnd() < 0.5) args.driver = 'null-co';
  const msg: Record<string, unknown> = { execute: pick(COMMANDS), arguments: args };
  if (rnd() < 0.3) msg.id = pick(VALUES);
  let text = JSON.stringify(msg);
  if (kind < 0.6) {
    // Mutate a valid message: cut, duplicate, flip or delete characters.
    const chars = [...text];
    for (let i = 1 + Math.floor(rnd() * 4); i > 0; i--) {
      const at = Math.floor(rnd() * chars.length);
      const op = rnd();
      if (op < 0.3) chars.splice(at, 1);
      else if (op < 0.6) chars.splice(at, 0, pick(['{', '}', '[', ']', '"', ',', ':', '\\', "'", '\n', 'e', '0']));
      else chars.length = at;
    }
    text = chars.join('');
  } else if (kind < 0.65) {
    text = '['.repeat(1 + Math.floor(rnd() * 1100));
  }
  return text;
}

let daemon: RunningDaemon | undefined;
afterAll(async () => {
  await daemon?.stop();
});

describe('a monitor under a bounded fuzz', () => {
  it('survives 10 000 hostile inputs, still answers, and keeps its memory bounded', async () => {
    daemon = await startDaemon('qbd');
    const pid = daemon.proc.pid!;
    const sock = net.createConnection(daemon.qmpPath);
    let received = '';
    sock.on('data', (d) => {
      // Keep only the tail: the end marker is all this test looks for.
      received = (received + d.toString('latin1')).slice(-65536);
    });
    await new Promise((r) => sock.once('connect', r));
    sock.write('{"execute":"qmp_capabilities"}\n');
    const before = rssKiB(pid);
    const rnd = prng(42);
    for (let i = 0; i < 10_000; i++) {
      const ok = sock.write(randomInput(rnd) + (rnd() < 0.7 ? '\n' : ''));
      if (!ok) await new Promise((r) => sock.once('drain', r));
    }
    // Close any construct the fuzz left open, then ask a question whose answer proves the monitor is alive.
    sock.write('\n' + ']'.repeat(2000) + '}'.repeat(2000) + '"\n\xff\n{"execute":"query-version","id":"still-alive"}\n');
    const deadline = Date.now() + 60_000;
    while (!received.includes('"still-alive"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(received).toContain('"id": "still-alive"');
    const after = rssKiB(pid);
    sock.destroy();
    expect(after - before).toBeLessThan(128 * 1024);
    const c = await daemon.client();
    expect((await c.execute('query-version')).return.qemu.major).toBe(7);
    c.close();
  });
});
