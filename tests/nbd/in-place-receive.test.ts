/**
 * A plain socket's reads land where the request parser asks: a large WRITE
 * payload straight in its own buffer, headers and small requests in a
 * scratch buffer that the next read overwrites. Whatever way the bytes are
 * split on the wire, every acknowledged byte must reach the image intact,
 * payloads over the limit must be skipped with the connection still usable,
 * and a client leaving halfway through a payload must not disturb the rest.
 * Served from the context that negotiated (the common case) and from an
 * iothread's context (a descriptor handed over).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolAvailable } from '../helpers/tools';
import { run, startNbdDaemon, type NbdDaemon, type NbdDaemonOptions } from './support/nbd-daemon';
import { RawClient } from './support/raw-client';

const SIZE = 16 << 20;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const EINVAL = 22;
/** The server's limit on a WRITE payload. */
const MAX_PAYLOAD = 32 << 20;

function header(type: number, offset: number, length: number, handle: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(length, 24);
  return h;
}

/** Sends `bytes` cut at `cuts` (offsets into it), each piece let out before the next so the server reads them apart. */
async function sendCut(c: RawClient, bytes: Buffer, cuts: number[]): Promise<void> {
  const at = [0, ...cuts.filter((x) => x > 0 && x < bytes.length).sort((a, b) => a - b), bytes.length];
  for (let i = 0; i + 1 < at.length; i++) {
    await new Promise<void>((resolve) => c.socket.write(bytes.subarray(at[i], at[i + 1]), () => resolve()));
    if (i % 4 === 3) await new Promise((r) => setTimeout(r, 1));
  }
}

async function connect(d: NbdDaemon): Promise<RawClient> {
  const c = await RawClient.connect(d.socket);
  await c.start();
  expect((await c.go('disk')).pop()!.type).toBe(1);
  return c;
}

const contexts: Array<[string, NbdDaemonOptions]> = [
  ['the negotiating context', {}],
  [
    "an iothread's context",
    {
      before: ['--object', 'iothread,id=io0'],
      exports: ['type=nbd,id=e0,node-name=disk,name=disk,writable=on,iothread=io0,fixed-iothread=on'],
    },
  ],
];

describe.skipIf(!toolAvailable('qemu-img'))('WRITE payloads read in place', () => {
  describe.each(contexts)('served from %s', (_where, options) => {
    let d: NbdDaemon;
    /** What the image must hold: every acknowledged write applied. */
    const expected = Buffer.alloc(SIZE);
    let handle = 1;
    beforeAll(async () => {
      d = await startNbdDaemon('qbd', { size: SIZE, ...options });
    }, 20_000);
    afterAll(async () => {
      await d?.stop();
    });

    /** A WRITE request with fresh random data at `offset`, recorded as expected once acknowledged. */
    function write(offset: number, length: number): { bytes: Buffer; apply: () => void } {
      const data = crypto.randomBytes(length);
      return { bytes: Buffer.concat([header(NBD_CMD_WRITE, offset, length, handle++), data]), apply: () => data.copy(expected, offset) };
    }

    async function readBack(c: RawClient, offset: number, length: number): Promise<void> {
      c.request(NBD_CMD_READ, offset, length, { handle: handle++ });
      const r = await c.simpleReply(length);
      expect(r.error).toBe(0);
      expect(r.data.equals(expected.subarray(offset, offset + length))).toBe(true);
    }

    it('lands WRITEs of many sizes cut at awkward places', async () => {
      const c = await connect(d);
      // Around the in-place threshold (16 KiB), the scratch buffer (64 KiB), a header's length, and large ones.
      const sizes = [1, 27, 28, 29, 512, 16383, 16384, 16385, 65535, 65536, 65537, 100_001, 256 << 10, 256 << 10, 1 << 20, 4 << 20, 4096, 256 << 10];
      for (let round = 0; round < 3; round++) {
        const writes = [];
        let offset = round * 7777;
        for (const len of sizes) {
          if (offset + len > SIZE) offset = round;
          writes.push(write(offset, len));
          offset += len + 4095;
        }
        const stream = Buffer.concat(writes.map((w) => w.bytes));
        // Cuts inside headers, right around header/payload borders, and at random.
        const cuts: number[] = [];
        let at = 0;
        for (const w of writes) {
          cuts.push(at + 1, at + 27, at + 28 + (round === 0 ? 0 : 1), at + w.bytes.length - 1 - round);
          cuts.push(at + Math.floor(Math.random() * w.bytes.length));
          at += w.bytes.length;
        }
        await sendCut(c, stream, cuts);
        for (const w of writes) {
          const r = await c.simpleReply();
          expect(r.error).toBe(0);
          w.apply();
        }
        for (let off = 0; off < SIZE; off += 4 << 20) await readBack(c, off, 4 << 20);
      }
      c.close();
    }, 60_000);

    it('serves a burst of small requests sent in one piece, beyond the in-flight cap', async () => {
      const c = await connect(d);
      const parts: Buffer[] = [];
      const writes = [];
      // Odd handles for the WRITEs, even ones for the READs.
      if (handle % 2 === 0) handle++;
      for (let i = 0; i < 100; i++) {
        const w = write((i * 8192 + 512 * (i % 7)) % (SIZE - 4096), 4096 - (i % 5));
        writes.push(w);
        parts.push(w.bytes, header(NBD_CMD_READ, 0, 512, handle++));
      }
      c.write(Buffer.concat(parts));
      // Replies come as requests finish, in any order: a READ's (handle even here) carries its data.
      const errors: number[] = [];
      for (let i = 0; i < writes.length * 2; i++) {
        const h = await c.read(16);
        expect(h.readUInt32BE(0)).toBe(0x67446698);
        errors.push(h.readUInt32BE(4));
        if (Number(h.readBigUInt64BE(8)) % 2 === 0) await c.read(512);
      }
      expect(errors).toEqual(new Array(200).fill(0));
      for (const w of writes) w.apply();
      await readBack(c, 0, 1 << 20);
      c.close();
    }, 30_000);

    it('skips a WRITE over the limit with EINVAL and keeps the connection', async () => {
      const c = await connect(d);
      const h = header(NBD_CMD_WRITE, 0, MAX_PAYLOAD + 4096, handle++);
      const junk = Buffer.alloc(MAX_PAYLOAD + 4096, 0x5a);
      await sendCut(c, Buffer.concat([h, junk]), [10, 28, 100_000, 1 << 20, 20 << 20]);
      const r = await c.simpleReply();
      expect(r.error).toBe(EINVAL);
      // The connection goes on, and nothing of the skipped payload reached the image.
      const w = write(12_345, 300_000);
      c.write(w.bytes);
      expect((await c.simpleReply()).error).toBe(0);
      w.apply();
      await readBack(c, 0, 1 << 20);
      c.close();
    }, 30_000);

    it('keeps serving when a client leaves in the middle of a payload or a header', async () => {
      // Part of a large payload read in place, then gone: the write is never applied.
      const a = await connect(d);
      const half = write(2 << 20, 1 << 20).bytes.subarray(0, 28 + 300_000);
      await sendCut(a, half, [28, 100_000]);
      await new Promise((r) => setTimeout(r, 50));
      a.close();
      // A small payload, cut short.
      const b = await connect(d);
      b.write(write(3 << 20, 4096).bytes.subarray(0, 28 + 1000));
      await new Promise((r) => setTimeout(r, 20));
      b.close();
      // Half a header.
      const e = await connect(d);
      e.write(header(NBD_CMD_WRITE, 0, 4096, handle++).subarray(0, 13));
      await new Promise((r) => setTimeout(r, 20));
      e.close();
      const c = await connect(d);
      const w = write(5 << 20, 256 << 10);
      c.write(w.bytes);
      expect((await c.simpleReply()).error).toBe(0);
      w.apply();
      await readBack(c, 2 << 20, 4 << 20);
      c.close();
    }, 30_000);

    it('leaves the image holding exactly what was acknowledged', async () => {
      const file = path.join(d.dir, 'expected.raw');
      fs.writeFileSync(file, expected);
      await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', '-U', d.image, file]);
    });
  });
});
