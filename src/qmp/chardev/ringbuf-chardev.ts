/**
 * `ringbuf` and `memory`: a ring buffer of `size` bytes (a power of two,
 * 64 KiB by default) holding what the frontend writes and what
 * `ringbuf-write` puts in, read back by `ringbuf-read`. When it is full the
 * oldest bytes are overwritten. `memory` is the same backend under an older
 * name. Storage grows as data arrives, so a large ring costs nothing until
 * it is used.
 */
import { outputOnlyTransport, SingleConnection, type Chardev } from './chardev';
import type { Transport } from '../transport';

export const RINGBUF_DEFAULT_SIZE = 65536;

/** QEMU's test: a size that is not a power of two has another bit set below its highest (0 passes it). */
export function isRingbufSize(size: bigint): boolean {
  return (BigInt.asIntN(64, size) & BigInt.asIntN(64, size - 1n)) === 0n;
}

export class RingbufChardev implements Chardev {
  readonly qomType: string;
  readonly offersOob = false;
  private buf = Buffer.alloc(0);
  /** Bytes ever written and ever read: their difference is what the ring holds. */
  private produced = 0;
  private consumed = 0;
  private readonly connection = new SingleConnection();

  constructor(
    readonly id: string,
    readonly kind: 'ringbuf' | 'memory',
    /** A power of two; 0 (which QEMU also accepts) holds nothing. */
    private readonly size: number,
  ) {
    this.qomType = kind === 'memory' ? 'chardev-memory' : 'chardev-ringbuf';
  }

  async open(): Promise<void> {
    this.connection.open(() => outputOnlyTransport(this.id, (bytes) => this.write(bytes)));
  }

  attach(onConnection: (t: Transport) => void): void {
    this.connection.attach(onConnection);
  }

  async close(): Promise<void> {
    this.buf = Buffer.alloc(0);
  }

  filename(): string {
    return this.kind;
  }

  /** Bytes waiting to be read. */
  count(): number {
    return this.produced - this.consumed;
  }

  write(data: Uint8Array): void {
    if (this.size <= 0) return;
    for (const byte of data) {
      const at = this.produced % this.size;
      if (at >= this.buf.length) this.grow(at + 1);
      this.buf[at] = byte;
      this.produced++;
      if (this.produced - this.consumed > this.size) this.consumed = this.produced - this.size;
    }
  }

  /** Takes up to `max` of the oldest bytes. */
  read(max: number): Buffer {
    const n = Math.min(max, this.count());
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.buf[(this.consumed + i) % this.size]!;
    this.consumed += n;
    return out;
  }

  private grow(needed: number): void {
    const next = Buffer.alloc(Math.min(this.size, Math.max(needed, this.buf.length * 2, 4096)));
    this.buf.copy(next);
    this.buf = next;
  }
}
