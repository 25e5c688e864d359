/**
 * WRITE payloads that reach the server in many small socket reads land in
 * pooled buffers, and READ replies go out of pooled buffers:
 * the bytes must land in the image intact and read back intact, also when
 * the same buffers serve request after request with different data, and
 * when a request's header starts in the chunk that ends the previous payload.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolAvailable } from '../helpers/tools';
import { run, startNbdDaemon, type NbdDaemon } from './support/nbd-daemon';
import { RawClient } from './support/raw-client';

const SIZE = 8 << 20;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;

function writeRequest(offset: number, payload: Buffer, handle: number): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(0x25609513, 0);
  h.writeUInt16BE(NBD_CMD_WRITE, 6);
  h.writeBigUInt64BE(BigInt(handle), 8);
  h.writeBigUInt64BE(BigInt(offset), 16);
  h.writeUInt32BE(payload.length, 24);
  return Buffer.concat([h, payload]);
}

/** Sends `bytes` in pieces of `piece` bytes, letting each leave before the next so the server reads them apart. */
async function trickle(c: RawClient, bytes: Buffer, piece: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += piece) {
    await new Promise<void>((resolve) => c.socket.write(bytes.subarray(at, at + piece), () => resolve()));
    if ((at / piece) % 8 === 7) await new Promise((r) => setTimeout(r, 1));
  }
}

describe.skipIf(!toolAvailable('qemu-img'))('write payloads split across many socket reads', () => {
  let d: NbdDaemon;
  let expected: Buffer;
  let expectedFile: string;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', { size: SIZE });
    expected = Buffer.alloc(SIZE);
    expectedFile = path.join(d.dir, 'expected.raw');
  }, 20_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('lands every byte, round after round through the same buffers, and reads it back', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    expect((await c.go('disk')).pop()!.type).toBe(1);
    let handle = 1;
    // Sizes around the pool's classes, odd ones, and one over the largest class.
    const sizes = [256 << 10, 100_001, 4096, 65_537, 1 << 20, (4 << 20) + 4096];
    for (let round = 0; round < 3; round++) {
      const batch: Buffer[] = [];
      let offset = round * 12_345;
      for (const len of sizes) {
        const data = crypto.randomBytes(len);
        if (offset + len > SIZE) offset = 0;
        batch.push(writeRequest(offset, data, handle++));
        data.copy(expected, offset);
        offset += len + 777;
      }
      // One stream: each payload's last piece shares a chunk with the next header; pieces of 1000 bytes.
      await trickle(c, Buffer.concat(batch), round === 0 ? 1000 : 4099 * (round + 1));
      for (let i = 0; i < sizes.length; i++) expect((await c.simpleReply()).error).toBe(0);
      // Read back everything written so far through the server's own read buffers.
      for (let at = 0; at < SIZE; at += 1 << 20) {
        c.request(NBD_CMD_READ, at, 1 << 20, { handle: handle++ });
        const r = await c.simpleReply(1 << 20);
        expect(r.error).toBe(0);
        expect(r.data.equals(expected.subarray(at, at + (1 << 20)))).toBe(true);
      }
    }
    c.close();
    fs.writeFileSync(expectedFile, expected);
    // The image itself, read by the reference tool.
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', '-U', d.image, expectedFile]);
  }, 60_000);
});
