/**
 * Writing to a TLS session without joining large buffers first. Node's
 * stream hands every chunk queued behind a write in progress to the session
 * at once, and the session copies them into one buffer before it encrypts:
 * with READ replies of hundreds of KiB that copy cost about as much as the
 * encryption. Here runs of small chunks are still joined (many small replies
 * in one record), and each large chunk goes to the session on its own.
 */
import * as net from 'node:net';
import type * as tls from 'node:tls';

/** Chunks at least this large are written alone (a TLS record holds 16 KiB). */
const WRITE_ALONE_FROM = 16 * 1024;

type Callback = (err?: Error | null) => void;

export function writeLargeChunksAlone(session: tls.TLSSocket): void {
  const writeOne = (buf: Buffer, cb: Callback): void => net.Socket.prototype._write.call(session, buf, 'buffer' as BufferEncoding, cb);
  session._writev = (chunks: Array<{ chunk: Buffer }>, cb: Callback): void => {
    const writes: Buffer[] = [];
    let small: Buffer[] = [];
    const joinSmall = (): void => {
      if (small.length > 0) writes.push(small.length === 1 ? small[0]! : Buffer.concat(small));
      small = [];
    };
    for (const { chunk } of chunks) {
      if (chunk.length < WRITE_ALONE_FROM) {
        small.push(chunk);
      } else {
        joinSmall();
        writes.push(chunk);
      }
    }
    joinSmall();
    let next = 0;
    const writeNext = (err?: Error | null): void => {
      if (err || next === writes.length) return cb(err);
      writeOne(writes[next++]!, writeNext);
    };
    writeNext();
  };
}
