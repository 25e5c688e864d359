/**
 * The NBD request parser and negotiation state machine fed the same bytes
 * split at random points: the bug class of every stream parser.
 */
import * as crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Handshake, type ExportDirectory } from '../../src/exports/nbd/handshake';
import type { NbdExportEntry } from '../../src/exports/nbd/messages';
import { NbdFramingError, RequestParser, type NbdRequest } from '../../src/exports/nbd/request-parser';

function header(type: number, offset: bigint, length: number, handle: number, flags = 0): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeUInt32BE(length, 24);
  return h;
}

function randomSplits(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < buf.length; ) {
    const n = 1 + Math.floor(Math.random() * Math.min(64, buf.length - at));
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

describe('RequestParser', () => {
  const payload = crypto.randomBytes(300);
  const stream = Buffer.concat([
    header(0, 4096n, 512, 1),
    header(1, 0n, payload.length, 2, 1),
    payload,
    header(1, 0n, 100, 3),
    Buffer.alloc(100, 7),
    header(3, 0n, 0, 4),
    header(0, 2n ** 63n, 512, 5),
  ]);

  function parse(chunks: Buffer[], maxPayload = 1 << 20): NbdRequest[] {
    const got: NbdRequest[] = [];
    const p = new RequestParser({ maxPayload, onRequest: (r) => got.push(r) });
    for (const c of chunks) p.push(c);
    return got;
  }

  it('parses the same requests whatever the chunking', () => {
    const whole = parse([stream]);
    expect(whole.map((r) => [r.type, r.length, r.handle.readBigUInt64BE(0)])).toEqual([
      [0, 512, 1n],
      [1, 300, 2n],
      [1, 100, 3n],
      [3, 0, 4n],
      [0, 512, 5n],
    ]);
    expect(whole[1]!.payload!.equals(payload)).toBe(true);
    expect(whole[1]!.flags).toBe(1);
    expect(whole[4]!.offset).toBe(Infinity);
    for (let i = 0; i < 200; i++) {
      const split = parse(randomSplits(stream));
      expect(split.map((r) => [r.type, r.flags, r.offset, r.length, r.handle.toString('hex'), r.payload?.toString('hex')])).toEqual(
        whole.map((r) => [r.type, r.flags, r.offset, r.length, r.handle.toString('hex'), r.payload?.toString('hex')]),
      );
    }
  });

  it('skips a payload over the limit and still reports the request', () => {
    const got = parse(randomSplits(Buffer.concat([header(1, 0n, 5000, 9), Buffer.alloc(5000), header(0, 0n, 1, 10)])), 4096);
    expect(got.map((r) => [r.handle.readBigUInt64BE(0), r.oversized === true, r.payload === undefined])).toEqual([
      [9n, true, true],
      [10n, false, true],
    ]);
  });

  it('fails on a bad magic and parses nothing after it', () => {
    const p = new RequestParser({ maxPayload: 1 << 20, onRequest: () => undefined });
    expect(() => p.push(Buffer.alloc(28, 1))).toThrow(NbdFramingError);
    expect(p.failed).toBe(true);
  });
});

describe('RequestParser reading in place', () => {
  /** A stream of WRITEs around the sizes where the parser changes course (in-place threshold, scratch size), reads and small WRITEs between. */
  function mixedStream(): { stream: Buffer; payloads: Buffer[] } {
    const sizes = [1, 512, 16383, 16384, 16385, 65535, 65536, 65537, 100_001, 256 << 10, 256 << 10, 4096, 1 << 20, 27, 29, 256 << 10];
    const parts: Buffer[] = [];
    const payloads: Buffer[] = [];
    let handle = 1;
    for (const len of sizes) {
      const data = crypto.randomBytes(len);
      payloads.push(data);
      parts.push(header(1, BigInt(handle * 4096), len, handle++), data);
      if (handle % 3 === 0) parts.push(header(0, 0n, 4096, 1000 + handle));
    }
    // Back to back small requests, as a queue-depth client sends them.
    for (let i = 0; i < 40; i++) {
      const data = crypto.randomBytes(4096);
      payloads.push(data);
      parts.push(header(1, BigInt(i * 4096), 4096, 2000 + i), data, header(0, 0n, 512, 3000 + i));
    }
    return { stream: Buffer.concat(parts), payloads };
  }

  /**
   * Feeds `stream` as a socket would: each read fills the start of the buffer
   * the parser asks for, with at most `readSize()` bytes; at random the
   * connection holds back (in-flight cap) and lets go again.
   */
  function readInPlace(stream: Buffer, readSize: () => number, maxPayload = 32 << 20) {
    const got: NbdRequest[] = [];
    const readInto = new Set<ArrayBufferLike>();
    const p = new RequestParser({ maxPayload, onRequest: (r) => got.push(r) });
    for (let at = 0; at < stream.length; ) {
      if (p.paused) {
        p.paused = false;
        p.run();
      }
      const buf = p.readBuffer();
      const n = Math.min(buf.length, readSize(), stream.length - at);
      stream.copy(buf, 0, at, at + n);
      // Whatever was in the buffer beyond `n` must not matter: spoil it.
      buf.fill(0xa5, n);
      readInto.add(buf.buffer);
      p.received(buf, n);
      at += n;
      if (Math.random() < 0.2) p.paused = true;
    }
    p.paused = false;
    p.run();
    return { got, readInto };
  }

  function summary(reqs: NbdRequest[]): unknown[] {
    return reqs.map((r) => [r.type, r.offset, r.length, r.handle.toString('hex'), r.oversized === true, r.payload?.toString('hex')]);
  }

  it('parses the same requests as from whole chunks, whatever the read sizes, and payloads stay intact', () => {
    const { stream, payloads } = mixedStream();
    const want: NbdRequest[] = [];
    new RequestParser({ maxPayload: 32 << 20, onRequest: (r) => want.push(r) }).push(stream);
    const sizes = [() => 1 + Math.floor(Math.random() * 70_000), () => 1 + Math.floor(Math.random() * 40), () => 1 << 30, () => [1, 27, 28, 29, 16383, 65535, 65537][Math.floor(Math.random() * 7)]!];
    for (const size of sizes) {
      for (let round = 0; round < 4; round++) {
        const { got } = readInPlace(stream, size);
        // Compared once everything is parsed: a payload still pointing into a reused buffer would show here.
        expect(summary(got)).toEqual(summary(want));
      }
    }
    expect(want.filter((r) => r.type === 1).map((r) => r.payload!.toString('hex'))).toEqual(payloads.map((d) => d.toString('hex')));
  });

  it('lets a large payload land in its own buffer, one header read between such payloads', () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 8; i++) parts.push(header(1, BigInt(i) << 18n, 256 << 10, i + 1), crypto.randomBytes(256 << 10));
    const { got, readInto } = readInPlace(Buffer.concat(parts), () => 1 << 30);
    expect(got).toHaveLength(8);
    // After the first request every payload was read straight into its buffer.
    for (const r of got.slice(1)) expect(readInto.has(r.payload!.buffer)).toBe(true);
    got.forEach((r, i) => expect(r.payload!.equals(parts[2 * i + 1]!)).toBe(true));
  });

  it('skips a payload over the limit read in pieces, and the next requests parse', () => {
    const tail = crypto.randomBytes(20_000);
    const stream = Buffer.concat([header(1, 0n, 300_000, 1), crypto.randomBytes(300_000), header(1, 0n, tail.length, 2), tail, header(0, 0n, 1, 3)]);
    const { got } = readInPlace(stream, () => 1 + Math.floor(Math.random() * 30_000), 100_000);
    expect(got.map((r) => [r.handle.readBigUInt64BE(0), r.oversized === true])).toEqual([
      [1n, true],
      [2n, false],
      [3n, false],
    ]);
    expect(got[1]!.payload!.equals(tail)).toBe(true);
  });

  it('fails on a bad magic read into the scratch buffer', () => {
    const p = new RequestParser({ maxPayload: 1 << 20, onRequest: () => undefined });
    const buf = p.readBuffer();
    buf.fill(1, 0, 28);
    expect(() => p.received(buf, 28)).toThrow(NbdFramingError);
    expect(p.failed).toBe(true);
  });
});

describe('Handshake', () => {
  const entry: NbdExportEntry = {
    id: 'e0', name: 'disk', description: 'd', nodeName: 'disk', home: 'default', writable: true, writethrough: false,
    allocationDepth: true, multiConn: true, size: 1 << 20, minBlock: 1, maxTransfer: 0, bitmaps: [],
  };
  const directory: ExportDirectory = {
    find: (name) => (name === 'disk' ? entry : undefined),
    list: () => [entry],
    sizeOf: () => entry.size,
    canServe: () => true,
  };

  function option(option: number, data: Buffer): Buffer {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(0x49484156454f5054n, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    return Buffer.concat([h, data]);
  }

  function goData(name: string): Buffer {
    const b = Buffer.alloc(4 + name.length + 2);
    b.writeUInt32BE(name.length, 0);
    b.write(name, 4);
    return b;
  }

  function metaData(name: string, queries: string[]): Buffer {
    const parts = [Buffer.alloc(4), Buffer.from(name), Buffer.alloc(4)];
    parts[0]!.writeUInt32BE(name.length);
    parts[2]!.writeUInt32BE(queries.length);
    for (const q of queries) {
      const l = Buffer.alloc(4);
      l.writeUInt32BE(q.length);
      parts.push(l, Buffer.from(q));
    }
    return Buffer.concat(parts);
  }

  const flags = Buffer.from([0, 0, 0, 3]);
  const stream = Buffer.concat([
    flags,
    option(0x99, Buffer.from('junk')),
    option(8, Buffer.alloc(0)),
    option(10, metaData('disk', ['base:allocation', 'qemu:allocation-depth', 'nope:x'])),
    option(7, goData('disk')),
    header(0, 0n, 512, 1),
  ]);

  function negotiate(chunks: Buffer[]): { written: Buffer; done?: { state: unknown; leftover: Buffer } } {
    const written: Buffer[] = [];
    let done: { state: unknown; leftover: Buffer } | undefined;
    const hs = new Handshake(directory, {
      write: (b) => written.push(b),
      close: (reason) => {
        throw new Error(`closed: ${reason}`);
      },
      done: (_e, state, leftover) => (done = { state, leftover }),
      startTls: () => {
        throw new Error('no TLS here');
      },
    });
    for (const c of chunks) {
      if (done) done.leftover = Buffer.concat([done.leftover, c]);
      else hs.push(c);
    }
    return { written: Buffer.concat(written), ...(done ? { done } : {}) };
  }

  it('reaches the same state and leaves the same bytes whatever the chunking', () => {
    const whole = negotiate([stream]);
    expect(whole.done?.state).toEqual({ exportName: 'disk', structuredReply: true, metaContexts: { 'base:allocation': 0, 'qemu:allocation-depth': 1 } });
    expect(whole.done?.leftover.equals(header(0, 0n, 512, 1))).toBe(true);
    for (let i = 0; i < 200; i++) {
      const split = negotiate(randomSplits(stream));
      expect(split.done?.state).toEqual(whole.done?.state);
      expect(split.written.equals(whole.written)).toBe(true);
      expect(split.done?.leftover.equals(whole.done!.leftover)).toBe(true);
    }
  });
});
