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
