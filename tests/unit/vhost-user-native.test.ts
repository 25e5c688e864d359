import { describe, it, expect, afterEach } from 'vitest';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { readFd, writeFd } from '../../src/native/fd-watch';
import { nativeAvailable } from '../../src/native/native';
import { eventFd, mapShared, memFd, recvWithFds, releaseMapping, sendWithFds, vhostUserCallsAvailable } from '../../src/native/vhost-user';

const EAGAIN = 11;

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A connected pair of UNIX stream sockets, as raw descriptors. */
async function socketPair(): Promise<{ a: number; b: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-vu-native-'));
  const sock = path.join(dir, 's');
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ path: sock });
  client.pause();
  await new Promise<void>((resolve) => client.once('connect', resolve));
  const peer = await accepted;
  const fdOf = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;
  cleanups.push(() => {
    client.destroy();
    peer.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { a: fdOf(client), b: fdOf(peer) };
}

describe('vhost-user calls of the native addon', () => {
  it('are available whenever the addon is built (required in CI)', () => {
    if (process.env.CI) expect(nativeAvailable).toBe(true);
    expect(vhostUserCallsAvailable).toBe(nativeAvailable);
  });

  it.runIf(vhostUserCallsAvailable)('passes descriptors with a message, and a memfd written through one mapping reads back through another', async () => {
    const { a, b } = await socketPair();
    const mem = memFd('qbd-test', 65536);
    cleanups.push(() => fs.closeSync(mem));
    expect(recvWithFds(b, Buffer.alloc(16)).bytes).toBe(-EAGAIN);
    expect(sendWithFds(a, Buffer.from('hello'), [mem])).toBe(5);
    const buf = Buffer.alloc(16);
    const got = recvWithFds(b, buf);
    expect(got.bytes).toBe(5);
    expect(buf.subarray(0, 5).toString()).toBe('hello');
    expect(got.fds).toHaveLength(1);
    const received = got.fds[0];
    cleanups.push(() => fs.closeSync(received));
    expect(received).not.toBe(mem);

    const theirs = new Uint8Array(mapShared(received, 4096, 8192));
    const ours = mapShared(mem, 0, 65536);
    theirs.set([1, 2, 3], 100);
    expect([...new Uint8Array(ours, 4196, 3)]).toEqual([1, 2, 3]);
    releaseMapping(theirs.buffer as ArrayBuffer);
    expect(theirs.byteLength).toBe(0);
    releaseMapping(theirs.buffer as ArrayBuffer);
    releaseMapping(ours);
  });

  it.runIf(vhostUserCallsAvailable)('sends a message without descriptors, and refuses an empty or impossible mapping', async () => {
    const { a, b } = await socketPair();
    expect(sendWithFds(a, Buffer.from('x'))).toBe(1);
    expect(recvWithFds(b, Buffer.alloc(4))).toEqual({ bytes: 1, fds: [] });
    const mem = memFd('qbd-test', 4096);
    cleanups.push(() => fs.closeSync(mem));
    expect(() => mapShared(mem, 0, 0)).toThrow(RangeError);
    // Past the end of the file, pages are not backed (a touch is SIGBUS): refused.
    expect(() => mapShared(mem, 0, 8192)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'mmap' }));
    expect(() => mapShared(mem, 4096, 4096)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const devNull = fs.openSync('/dev/null', 'r');
    cleanups.push(() => fs.closeSync(devNull));
    expect(() => mapShared(devNull, 0, 4096)).toThrow(expect.objectContaining({ syscall: 'mmap' }));
    // Past Node's buffer limit: refused, and the mapping released exactly once.
    const big = memFd('qbd-test-big', 6 * 1024 ** 3);
    cleanups.push(() => fs.closeSync(big));
    if (bufferConstants.MAX_LENGTH < 6 * 1024 ** 3) expect(() => mapShared(big, 0, 6 * 1024 ** 3)).toThrow(expect.objectContaining({ code: 'ERR_BUFFER_TOO_LARGE' }));
  });

  it.runIf(vhostUserCallsAvailable)('makes eventfds that count kicks', () => {
    const efd = eventFd();
    cleanups.push(() => fs.closeSync(efd));
    const eight = Buffer.alloc(8);
    expect(readFd(efd, eight)).toBe(-EAGAIN);
    eight.writeBigUInt64LE(1n);
    expect(writeFd(efd, eight)).toBe(8);
    expect(writeFd(efd, eight)).toBe(8);
    expect(readFd(efd, eight)).toBe(8);
    expect(eight.readBigUInt64LE()).toBe(2n);
  });
});
