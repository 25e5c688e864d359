import { describe, it, expect, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FD_READABLE, fdWatchAvailable, readFd, watchFd, writeFd } from '../../src/native/fd-watch';
import { nativeAvailable } from '../../src/native/native';
import { eventFd, vhostUserCallsAvailable } from '../../src/native/vhost-user';

const EAGAIN = 11;

/** Both ends of a FIFO, non-blocking: a descriptor Node has no stream for here. */
function fifo(): { r: number; w: number; close(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-fdwatch-'));
  const p = path.join(dir, 'fifo');
  execFileSync('mkfifo', [p]);
  const r = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.rmSync(dir, { recursive: true });
  return { r, w, close: () => (fs.closeSync(r), fs.closeSync(w)) };
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('watching descriptors from an event loop', () => {
  it('is available whenever the addon is built (required in CI)', () => {
    if (process.env.CI) expect(nativeAvailable).toBe(true);
    expect(fdWatchAvailable).toBe(nativeAvailable);
  });

  it.runIf(fdWatchAvailable)('answers -EAGAIN for an empty non-blocking read, then calls back once data is there', async () => {
    const f = fifo();
    cleanups.push(f.close);
    const buf = Buffer.alloc(64);
    expect(readFd(f.r, buf)).toBe(-EAGAIN);
    const got = await new Promise<{ status: number; events: number; text: string }>((resolve) => {
      const watch = watchFd(f.r, false, (status, events) => {
        const n = readFd(f.r, buf);
        watch.close();
        watch.close();
        resolve({ status, events, text: buf.subarray(0, n).toString() });
      });
      setTimeout(() => expect(writeFd(f.w, Buffer.from('xhello'), 1)).toBe(5), 20);
    });
    expect(got).toEqual({ status: 0, events: FD_READABLE, text: 'hello' });
  });

  it.runIf(fdWatchAvailable)('stops calling back once closed, and a closed watch lets the loop end', async () => {
    const f = fifo();
    cleanups.push(f.close);
    let calls = 0;
    const watch = watchFd(f.r, false, () => calls++);
    watch.close();
    writeFd(f.w, Buffer.from('x'));
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(0);
  });

  it.runIf(fdWatchAvailable)('works in a worker thread, and a worker ending with a live watch exits cleanly', async () => {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { watchFd, readFd } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/src/native/fd-watch.js'))});
      const buf = Buffer.alloc(8);
      watchFd(workerData.r, false, () => { const n = readFd(workerData.r, buf); if (n > 0) parentPort.postMessage(buf.subarray(0, n).toString()); });
      parentPort.postMessage('watching');`;
    const f = fifo();
    cleanups.push(f.close);
    const worker = new Worker(code, { eval: true, workerData: { r: f.r } });
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      worker.on('error', reject);
      worker.on('message', (m: string) => {
        messages.push(m);
        if (m === 'watching') writeFd(f.w, Buffer.from('ping'));
        else resolve();
      });
    });
    expect(messages).toEqual(['watching', 'ping']);
    expect(await worker.terminate()).toBe(1);
  });

  it.runIf(fdWatchAvailable && vhostUserCallsAvailable)('a close() long after the watch was released, or from inside its callback, touches no other watch', async () => {
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    // Eventfds are always writable: a watch for writability fires at once. One watch per descriptor, as libuv wants.
    const fds = (n: number): number[] => Array.from({ length: n }, () => eventFd());
    for (let round = 0; round < 5; round++) {
      const oldFds = fds(20);
      const liveFds = fds(40);
      cleanups.push(() => [...oldFds, ...liveFds].forEach((fd) => fs.closeSync(fd)));
      // Closed from inside their own callbacks, then released by the loop.
      const olds = oldFds.map((fd) => {
        const w = watchFd(fd, true, () => w.close());
        return w;
      });
      await turn();
      await turn();
      // New watches may well take the released ones' memory: the old handles' close() must not reach them.
      let calls = 0;
      const lives = liveFds.map((fd) => watchFd(fd, true, () => calls++));
      for (const w of olds) w.close();
      await turn();
      await turn();
      for (const w of lives) w.close();
      expect(calls).toBeGreaterThanOrEqual(lives.length);
    }
  });

  it.runIf(fdWatchAvailable)('refuses bad arguments with Node-style errors', () => {
    expect(() => watchFd(-1, false, () => undefined)).toThrow(/fd must be an integer/);
    expect(() => watchFd(0, 'no' as unknown as boolean, () => undefined)).toThrow(/writable must be a boolean/);
    expect(() => readFd(0, Buffer.alloc(4), 2, 3)).toThrow(/length must be an integer/);
  });
});
