/**
 * Exact-length reads from a socket, for the handshake: bytes arrive in
 * whatever pieces the kernel gives, and each step of negotiation wants a
 * fixed number of them. After negotiation the leftover bytes and the socket
 * go to the transmission parser.
 */
import type * as net from 'node:net';
import { ByteQueue } from '../../../exports/nbd/byte-queue';
import { IoError } from '../../common/io-types';

export class SocketReader {
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.queue.push(chunk);
    this.wake();
  };
  private readonly onEnd = (): void => this.fail(this.describeFailure?.() ?? new IoError('EIO', 'Unexpected end-of-file before all data were read'));
  private readonly onError = (err: Error): void => this.fail(this.describeFailure?.(err) ?? new IoError((err as NodeJS.ErrnoException).code ?? 'EIO', err.message));

  /** `describeFailure` words an end or error of the socket as its user expects (a TLS session's read errors). */
  constructor(
    private readonly socket: net.Socket,
    private readonly describeFailure?: (err?: Error) => IoError,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  read(n: number): Promise<Buffer> {
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  /** Stops listening; returns what arrived beyond the last read. */
  release(): Buffer {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return this.queue.drain();
  }

  private wake(): void {
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = undefined;
      w.resolve(this.queue.take(w.n));
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }
}
