/**
 * A deliberately low-level NBD client for tests: it sends exactly the bytes
 * it is told to, so tests can send what well-behaved clients never do.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

export const IHAVEOPT = 0x49484156454f5054n;
export const REQUEST_MAGIC = 0x25609513;

export class RawClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /**
   * STARTTLS, then a TLS session over the same socket with `options`; `junk`
   * is sent in plaintext right behind the option. Resolves with a client that
   * speaks inside the session, or rejects with the reply or the TLS error.
   */
  async startTls(options: tls.ConnectionOptions, junk?: Buffer): Promise<RawClient> {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(5, 8);
    this.write(junk ? Buffer.concat([h, junk]) : h);
    const reply = await this.optionReply();
    if (reply.type !== 1) throw new Error(`STARTTLS refused: 0x${reply.type.toString(16)} ${reply.data.toString()}`);
    return new Promise((resolve, reject) => {
      const secure = tls.connect({ ...options, socket: this.socket }, () => resolve(new RawClient(secure)));
      secure.once('error', reject);
      secure.once('close', () => reject(new Error('closed during the TLS handshake')));
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Reads exactly n bytes; rejects if the server closes first or nothing comes within the timeout. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) throw new Error('closed by the server');
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Greeting, then fixed-newstyle client flags (NO_ZEROES too). */
  async start(): Promise<void> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not a newstyle server');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3);
    this.write(flags);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), length = data.length): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(length, 12);
    this.write(Buffer.concat([h, data]));
  }

  /** One option reply: its type and data. */
  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** NBD_OPT_GO on `name`; returns the replies up to and including the final one. */
  async go(name: string): Promise<Array<{ type: number; data: Buffer }>> {
    const n = Buffer.from(name);
    const d = Buffer.alloc(4 + n.length + 2);
    d.writeUInt32BE(n.length, 0);
    n.copy(d, 4);
    this.sendOption(7, d);
    const replies = [];
    for (;;) {
      const r = await this.optionReply();
      replies.push(r);
      if (r.type !== 3) return replies;
    }
  }

  request(type: number, offset: number, length: number, opts: { flags?: number; handle?: number; payload?: Buffer } = {}): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(opts.handle ?? 1), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.write(opts.payload ? Buffer.concat([h, opts.payload]) : h);
  }

  /** A simple reply: error and handle (no structured replies were negotiated). */
  async simpleReply(dataLength = 0): Promise<{ error: number; handle: number; data: Buffer }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== 0x67446698) throw new Error(`unexpected reply magic ${h.readUInt32BE(0).toString(16)}`);
    const error = h.readUInt32BE(4);
    return { error, handle: Number(h.readBigUInt64BE(8)), data: error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0) };
  }

  close(): void {
    this.socket.destroy();
  }
}
