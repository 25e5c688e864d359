/**
 * A job's background flushes of its target: one at a time, after enough
 * bytes were written, and a failed one fails the next flush the job waits
 * for (the kernel reports a failed write-back only once).
 */
import { describe, expect, it } from 'vitest';
import type { IoNode } from '../../src/block/io/io-node';
import { NodeIoStats } from '../../src/block/io/node-stats';
import { WriteBehind } from '../../src/jobs/io/write-behind';

/** A node whose flushes wait until the test ends them. */
function fakeTarget(): { node: IoNode; flushes: Array<{ end: (err?: Error) => void }> } {
  const flushes: Array<{ end: (err?: Error) => void }> = [];
  const node = {
    inFlight: 0,
    idleWaiters: [] as Array<() => void>,
    stats: new NodeIoStats(),
    driver: {
      flush: () =>
        new Promise<void>((resolve, reject) => {
          flushes.push({ end: (err) => (err ? reject(err) : resolve()) });
        }),
    },
  } as unknown as IoNode;
  return { node, flushes };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('write-behind flushes', () => {
  it('starts one background flush after every `every` bytes, never two at once', async () => {
    const { node, flushes } = fakeTarget();
    const wb = new WriteBehind(node, 100);
    wb.wrote(60);
    expect(flushes.length).toBe(0);
    wb.wrote(60);
    expect(flushes.length).toBe(1);
    wb.wrote(500);
    expect(flushes.length).toBe(1);
    flushes[0]!.end();
    await tick();
    wb.wrote(100);
    expect(flushes.length).toBe(2);
    flushes[1]!.end();
    await wb.settle();
  });

  it('the job flush waits for the background flush, then flushes again', async () => {
    const { node, flushes } = fakeTarget();
    const wb = new WriteBehind(node, 10);
    wb.wrote(10);
    let done = false;
    const flushed = wb.flush().then(() => (done = true));
    await tick();
    expect(flushes.length).toBe(1);
    flushes[0]!.end();
    await tick();
    expect(flushes.length).toBe(2);
    expect(done).toBe(false);
    flushes[1]!.end();
    await flushed;
    expect(node.inFlight).toBe(0);
  });

  it('a failed background flush fails the next flush the job waits for, once', async () => {
    const { node, flushes } = fakeTarget();
    const wb = new WriteBehind(node, 10);
    wb.wrote(10);
    flushes[0]!.end(Object.assign(new Error('Input/output error'), { code: 'EIO' }));
    await expect(wb.flush()).rejects.toThrow('Input/output error');
    const again = wb.flush();
    await tick();
    flushes[1]!.end();
    await expect(again).resolves.toBeUndefined();
  });
});
