/**
 * A byte stream carried over a MessagePort, for a connection whose
 * transport cannot leave the thread that accepted it: a TLS session lives
 * in the negotiating context's OpenSSL objects, so that context keeps the
 * session and relays the plaintext (`relayOverPort`), and the export's
 * context serves a `PortStream` as it would a socket.
 *
 * Flow control both ways: the serving side's `writableLength` counts the
 * bytes the relay has not yet seen leave through the session (each chunk is
 * acknowledged once written), with 'drain' when they all have, so a client
 * that does not read its replies holds up its connection as a socket's
 * would; and the relay stops reading from the client while the serving side
 * asks it to pause.
 */
import { Duplex } from 'node:stream';
import type { MessagePort } from 'node:worker_threads';

type ToServer = { t: 'data'; b: Uint8Array } | { t: 'ack'; n: number } | { t: 'end' };
type ToRelay = { t: 'data'; b: Uint8Array } | { t: 'pause' } | { t: 'resume' } | { t: 'end' };

/** The negotiating side: pumps `stream` (the TLS session) to and from `port`. */
export function relayOverPort(stream: Duplex, port: MessagePort): void {
  let ended = false;
  const finish = (): void => {
    if (ended) return;
    ended = true;
    port.postMessage({ t: 'end' } satisfies ToServer);
    port.close();
  };
  stream.on('data', (chunk: Buffer) => port.postMessage({ t: 'data', b: chunk } satisfies ToServer));
  stream.on('close', finish);
  stream.on('error', () => stream.destroy());
  port.on('message', (m: ToRelay) => {
    switch (m.t) {
      case 'data':
        stream.write(Buffer.from(m.b.buffer, m.b.byteOffset, m.b.byteLength), () => {
          if (!ended) port.postMessage({ t: 'ack', n: m.b.byteLength } satisfies ToServer);
        });
        return;
      case 'pause':
        stream.pause();
        return;
      case 'resume':
        stream.resume();
        return;
      case 'end':
        // Replies already written leave first, as a socket's end() lets them.
        stream.end();
        finish();
        return;
    }
  });
  port.on('close', () => stream.destroy());
  stream.resume();
}

/** The serving side: a duplex stream whose bytes come from and go to the relay. */
export class PortStream extends Duplex {
  /** Bytes written but not yet acknowledged by the relay. */
  private unacked = 0;
  private paused = false;
  private gone = false;

  constructor(private readonly port: MessagePort) {
    super({ allowHalfOpen: false });
    // What the client has yet to receive, as a socket's writableLength says of its kernel queue.
    Object.defineProperty(this, 'writableLength', { get: () => this.unacked + this.writableState().length });
    port.on('message', (m: ToServer) => {
      switch (m.t) {
        case 'data':
          if (!this.push(Buffer.from(m.b.buffer, m.b.byteOffset, m.b.byteLength)) && !this.paused) {
            this.paused = true;
            this.post({ t: 'pause' });
          }
          return;
        case 'ack':
          this.unacked -= m.n;
          if (this.unacked === 0) this.emit('drain');
          return;
        case 'end':
          this.gone = true;
          this.push(null);
          this.destroy();
          return;
      }
    });
    port.on('close', () => {
      this.gone = true;
      this.destroy();
    });
  }

  private writableState(): { length: number } {
    return (this as unknown as { _writableState: { length: number } })._writableState;
  }

  private post(m: ToRelay): void {
    if (!this.gone) this.port.postMessage(m);
  }

  override _read(): void {
    if (this.paused) {
      this.paused = false;
      this.post({ t: 'resume' });
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.gone) return callback(Object.assign(new Error('the connection is closed'), { code: 'EPIPE' }));
    this.unacked += chunk.length;
    // A message carries a view's whole backing store: post only the bytes when the chunk is part of a larger one.
    this.post({ t: 'data', b: chunk.byteLength === chunk.buffer.byteLength ? chunk : Uint8Array.prototype.slice.call(chunk) });
    callback();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.post({ t: 'end' });
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.post({ t: 'end' });
    this.gone = true;
    this.port.close();
    callback(err);
  }

  /** A socket's method, so the stream can stand where a socket does. */
  destroySoon(): void {
    this.end();
  }
}
