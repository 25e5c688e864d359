/**
 * The client's reply parser, against a scripted server: replies out of
 * order, split at random points, data and hole chunks, error chunks,
 * block status, and a reply that breaks the protocol.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { CMD, REPLY_FLAG_DONE, REPLY_TYPE, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from '../../src/exports/nbd/protocol';
import type { NbdExportInfo } from '../../src/block/drivers/nbd/common';
import { ConnectionLost, Transmission } from '../../src/block/drivers/nbd/transmission';

const INFO: NbdExportInfo = { size: 1 << 20, flags: 0, minBlock: 0, preferredBlock: 0, maxBlock: 0, structuredReplies: true, metaContextId: 7 };

interface Request {
  type: number;
  handle: bigint;
  offset: number;
  length: number;
}

/** A server end that hands parsed requests to the test and sends what it is told, in random pieces. */
class ScriptedServer {
  readonly requests: Request[] = [];
  private waiters: Array<() => void> = [];
  private buf = Buffer.alloc(0);
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 28) {
        const type = this.buf.readUInt16BE(6);
        const length = this.buf.readUInt32BE(24);
        const total = 28 + (type === CMD.WRITE ? length : 0);
        if (this.buf.length < total) break;
        this.requests.push({ type, handle: this.buf.readBigUInt64BE(8), offset: Number(this.buf.readBigUInt64BE(16)), length });
        this.buf = this.buf.subarray(total);
      }
      this.waiters.splice(0).forEach((w) => w());
    });
  }
  async request(n: number): Promise<Request> {
    while (this.requests.length <= n) await new Promise<void>((r) => this.waiters.push(r));
    return this.requests[n]!;
  }
  /** Writes `bytes` in pieces of random sizes, each its own write. */
  async send(bytes: Buffer, seed: number): Promise<void> {
    let s = seed;
    for (let at = 0; at < bytes.length; ) {
      s = (s * 1103515245 + 12345) & 0x7fffffff;
      const n = Math.min(bytes.length - at, 1 + (s % 37));
      await new Promise<void>((r) => this.socket.write(bytes.subarray(at, at + n), () => r()));
      at += n;
    }
  }
}

function chunk(handle: bigint, type: number, payload: Buffer, done = false): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(done ? REPLY_FLAG_DONE : 0, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(handle, 8);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function dataChunk(handle: bigint, offset: number, data: Buffer, done = false): Buffer {
  const p = Buffer.alloc(8);
  p.writeBigUInt64BE(BigInt(offset));
  return chunk(handle, REPLY_TYPE.OFFSET_DATA, Buffer.concat([p, data]), done);
}

function holeChunk(handle: bigint, offset: number, length: number, done = false): Buffer {
  const p = Buffer.alloc(12);
  p.writeBigUInt64BE(BigInt(offset));
  p.writeUInt32BE(length, 8);
  return chunk(handle, REPLY_TYPE.OFFSET_HOLE, p, done);
}

function errorChunk(handle: bigint, errno: number, message: string, done = false): Buffer {
  const m = Buffer.from(message);
  const p = Buffer.alloc(6);
  p.writeUInt32BE(errno, 0);
  p.writeUInt16BE(m.length, 4);
  return chunk(handle, REPLY_TYPE.ERROR, Buffer.concat([p, m]), done);
}

function simpleReply(handle: bigint, errno: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  b.writeBigUInt64BE(handle, 8);
  return b;
}

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

async function pair(): Promise<{ client: Transmission; server: ScriptedServer }> {
  const dir = tempDir('qbd-nbdc-parse-');
  const sock = path.join(dir, 's.sock');
  const accepted = new Promise<net.Socket>((resolve) => {
    const srv = net.createServer(resolve).listen(sock);
    cleanups.push(() => {
      srv.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
  });
  await new Promise((r) => setTimeout(r, 10));
  const c = net.connect({ path: sock });
  await new Promise((r) => c.once('connect', r));
  const s = await accepted;
  cleanups.push(() => {
    c.destroy();
    s.destroy();
  });
  return { client: new Transmission(c, INFO, Buffer.alloc(0)), server: new ScriptedServer(s) };
}

describe('the NBD client reply parser', () => {
  for (const seed of [1, 2, 3, 42, 1234]) {
    it(`matches out-of-order replies split at random points (seed ${seed})`, async () => {
      const { client, server } = await pair();
      const a = Buffer.alloc(8192, 0xee);
      const b = Buffer.alloc(4096, 0xee);
      const pa = client.request(CMD.READ, 0, 0, a.length, undefined, a);
      const pb = client.request(CMD.READ, 0, 65536, b.length, undefined, b);
      const ra = await server.request(0);
      const rb = await server.request(1);
      const payload = Buffer.alloc(4096, 0x5a);
      // The second request is answered first; the first in three chunks with a hole between.
      await server.send(
        Buffer.concat([
          dataChunk(rb.handle, 65536, Buffer.alloc(4096, 0x77), true),
          dataChunk(ra.handle, 0, payload.subarray(0, 2048)),
          holeChunk(ra.handle, 2048, 4096),
          dataChunk(ra.handle, 6144, Buffer.alloc(2048, 0x33), true),
        ]),
        seed,
      );
      await Promise.all([pa, pb]);
      expect(b.every((x) => x === 0x77)).toBe(true);
      expect(a.subarray(0, 2048).every((x) => x === 0x5a)).toBe(true);
      expect(a.subarray(2048, 6144).every((x) => x === 0)).toBe(true);
      expect(a.subarray(6144).every((x) => x === 0x33)).toBe(true);
    });
  }

  it('fails a request with the server error and goes on serving others', async () => {
    const { client, server } = await pair();
    const buf = Buffer.alloc(512);
    const read = client.request(CMD.READ, 0, 0, 512, undefined, buf);
    const write = client.request(CMD.WRITE, 0, 0, 4, Buffer.from('abcd'));
    const status = client.request(CMD.BLOCK_STATUS, 0, 0, 65536);
    const [r0, r1, r2] = [await server.request(0), await server.request(1), await server.request(2)];
    const bs = Buffer.alloc(12);
    bs.writeUInt32BE(7, 0);
    bs.writeUInt32BE(4096, 4);
    bs.writeUInt32BE(3, 8);
    await server.send(Buffer.concat([errorChunk(r0.handle, 5, 'disk on fire'), chunk(r0.handle, REPLY_TYPE.NONE, Buffer.alloc(0), true), simpleReply(r1.handle, 28), chunk(r2.handle, REPLY_TYPE.BLOCK_STATUS, bs, true)]), 9);
    await expect(read).rejects.toMatchObject({ code: 'EIO', message: 'server reported: disk on fire' });
    await expect(write).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await status).toEqual({ length: 4096, flags: 3 });
    expect(client.alive).toBe(true);
  });

  it('drops the connection on a reply that breaks the protocol, failing every request', async () => {
    const { client, server } = await pair();
    let closed: Error | undefined;
    client.onClose((err) => (closed = err));
    const one = client.request(CMD.READ, 0, 0, 512, undefined, Buffer.alloc(512));
    const two = client.request(CMD.FLUSH, 0, 0, 0);
    const r0 = await server.request(0);
    // A data chunk that lies outside its request.
    await server.send(dataChunk(r0.handle, 1 << 19, Buffer.alloc(16)), 5);
    await expect(one).rejects.toBeInstanceOf(ConnectionLost);
    await expect(two).rejects.toBeInstanceOf(ConnectionLost);
    expect(closed?.message).toMatch(/protocol error/);
    expect(client.alive).toBe(false);
  });
});
