/**
 * One client in the transmission phase, served in the I/O context its
 * export's node lives in. Requests are checked here once (command, flags,
 * bounds, read-only, sizes) and run concurrently on the node through an
 * `IoBackend`, up to a per-connection cap; replies go out as each finishes.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { STATUS } from '../../block/common/io-types';
import { ACCT_FLUSH, ACCT_READ, ACCT_UNMAP, ACCT_WRITE, type AcctKind } from '../../block/common/node-stats';
import type { IoBackend } from '../../block/io/backend';
import { dirtyBitmapExtents } from './bitmap-extents';
import type { NbdExportEntry, NegotiatedState } from './messages';
import {
  CMD,
  CMD_FLAG,
  MAX_PAYLOAD,
  META_ALLOCATION_DEPTH,
  META_BASE_ALLOCATION,
  NBD_ERR,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  STATE_HOLE,
  STATE_ZERO,
  STRUCTURED_REPLY_MAGIC,
  nbdErrorOf,
} from './protocol';
import { REPLY_HEADROOM, releaseReadBuffer, takeReadBuffer, takeReplyBuffer } from '../read-buffers';
import { NbdFramingError, RequestParser, type NbdRequest } from './request-parser';

/** The kind a request is accounted as on the exported node (query-blockstats); others are not accounted. */
const ACCT_KIND: Partial<Record<number, AcctKind>> = {
  [CMD.READ]: ACCT_READ,
  [CMD.WRITE]: ACCT_WRITE,
  [CMD.WRITE_ZEROES]: ACCT_WRITE,
  [CMD.TRIM]: ACCT_UNMAP,
  [CMD.FLUSH]: ACCT_FLUSH,
};

/** Requests one connection may have in flight before it stops reading. */
export const MAX_IN_FLIGHT = 32;
/** Replies queued on the socket beyond which the connection stops reading until the client catches up. */
const MAX_QUEUED_OUTPUT = 64 * 1024 * 1024;
/** Descriptors per BLOCK_STATUS context reply. */
const MAX_EXTENTS = 65536;

/** Flags each command accepts besides FUA, which QEMU accepts (and ignores where it means nothing) on every command. */
const ALLOWED_FLAGS: Record<number, number> = {
  [CMD.READ]: CMD_FLAG.DF,
  [CMD.WRITE]: 0,
  [CMD.FLUSH]: 0,
  [CMD.TRIM]: 0,
  [CMD.CACHE]: 0,
  [CMD.WRITE_ZEROES]: CMD_FLAG.NO_HOLE | CMD_FLAG.FAST_ZERO,
  [CMD.BLOCK_STATUS]: CMD_FLAG.REQ_ONE,
};

/** An error to send as the request's reply. */
class RequestError extends Error {
  constructor(
    readonly nbdError: number,
    message: string,
  ) {
    super(message);
  }
}

/** Writes a 64-bit offset (a safe integer) big-endian without going through BigInt. */
function writeOffset(buf: Buffer, offset: number, at: number): void {
  buf.writeUInt32BE(Math.floor(offset / 0x100000000), at);
  buf.writeUInt32BE(offset >>> 0, at + 4);
}

/** Writes a simple reply's 16-byte header into `buf` at `at`. */
function writeSimpleHeader(buf: Buffer, at: number, req: NbdRequest, error: number): void {
  buf.writeUInt32BE(SIMPLE_REPLY_MAGIC, at);
  buf.writeUInt32BE(error, at + 4);
  req.handle.copy(buf, at + 8);
}

/** Writes a structured reply chunk's 20-byte header into `buf` at `at`. */
function writeChunkHeader(buf: Buffer, at: number, req: NbdRequest, flags: number, type: number, length: number): void {
  buf.writeUInt32BE(STRUCTURED_REPLY_MAGIC, at);
  buf.writeUInt16BE(flags, at + 4);
  buf.writeUInt16BE(type, at + 6);
  req.handle.copy(buf, at + 8);
  buf.writeUInt32BE(length, at + 16);
}

/** A piece of a READ reply: data read into a pooled reply buffer (`whole`, with headroom for the chunk header), or a hole. */
interface ReadChunk {
  offset: number;
  whole?: Buffer;
  data?: Buffer;
  hole?: number;
}

export interface ServedExport {
  readonly entry: NbdExportEntry;
  readonly backend: IoBackend;
  /** False once the node's I/O half has left this context (a forced move): requests must not reach it any more. */
  alive(): boolean;
}

/**
 * What a connection is served over: a stream whose 'data' chunks it parses
 * (a TLS session, a stream relayed from the context holding the session), or
 * the descriptor of a plain socket, which the connection opens itself so
 * that each read lands where the parser asks (a WRITE payload straight in
 * its buffer).
 */
export type Transport = { stream: Duplex } | { fd: number };

/** The socket constructor takes `onread` as `net.connect` does (Node's typings list it for the latter only). */
type SocketOverDescriptor = net.SocketConstructorOpts & { onread: net.OnReadOpts };

export class TransmissionConnection {
  /** The socket, the TLS session, or the relayed stream. */
  readonly socket: Duplex;
  private readonly parser: RequestParser;
  private inFlight = 0;
  private disconnecting = false;
  private socketClosed = false;
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
  private readonly closedWaiters: Array<() => void> = [];
  /** The negotiated meta contexts, in id order. */
  private readonly metaContexts: Array<[string, number]>;

  constructor(
    transport: Transport,
    private readonly exp: ServedExport,
    private readonly state: NegotiatedState,
    leftover: Buffer,
    private readonly onGone: (conn: TransmissionConnection) => void,
  ) {
    this.metaContexts = Object.entries(state.metaContexts).sort((a, b) => a[1] - b[1]);
    this.parser = new RequestParser({ maxPayload: MAX_PAYLOAD, onRequest: (req) => this.dispatch(req), payloadBuffer: takeReadBuffer });
    let socket: Duplex;
    if ('fd' in transport) {
      const parser = this.parser;
      const options: SocketOverDescriptor = {
        fd: transport.fd,
        readable: true,
        writable: true,
        // Returning false stops reading; `updateFlow` has paused the socket then, and its resume reads again.
        onread: { buffer: () => parser.readBuffer(), callback: (n, buf) => this.receiveRead(buf as Buffer, n) },
      };
      const plain = new net.Socket(options);
      plain.setNoDelay(true);
      socket = plain;
    } else {
      socket = transport.stream;
      socket.on('data', (chunk: Buffer) => this.receive(chunk));
    }
    this.socket = socket;
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.socketClosed = true;
      this.checkGone();
    });
    socket.on('drain', () => this.updateFlow());
    if (leftover.length > 0) this.receive(leftover);
    if (!this.parser.paused) socket.resume();
  }

  /** The client sent DISC, went away, or is being dropped. */
  get leaving(): boolean {
    return this.disconnecting || this.socketClosed;
  }

  /** Resolves once the socket is closed and no request is in flight. */
  whenGone(): Promise<void> {
    if (this.socketClosed && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /** Drops the client at once; requests in flight finish, their replies are lost. */
  close(): void {
    this.disconnecting = true;
    this.socket.destroy();
  }

  private checkGone(): void {
    if (!this.socketClosed || this.inFlight > 0) return;
    this.onGone(this);
    for (const w of this.closedWaiters.splice(0)) w();
  }

  private receive(chunk: Buffer): void {
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.framingLost(err);
    }
  }

  /** `n` bytes were read into `buf`, where the parser asked for them; false while the connection holds back reading. */
  private receiveRead(buf: Buffer, n: number): boolean {
    try {
      this.parser.received(buf, n);
    } catch (err) {
      this.framingLost(err);
    }
    return !this.parser.paused;
  }

  private framingLost(err: unknown): void {
    if (!(err instanceof NbdFramingError)) throw err;
    this.socket.destroy();
  }

  /** Stops reading while too much is in flight or queued, and starts again once it drains. */
  private updateFlow(): void {
    const hold = this.disconnecting || this.inFlight >= MAX_IN_FLIGHT || this.socket.writableLength > MAX_QUEUED_OUTPUT;
    if (hold === this.parser.paused) return;
    this.parser.paused = hold;
    if (hold) {
      this.socket.pause();
    } else {
      this.socket.resume();
      try {
        this.parser.run();
      } catch {
        this.socket.destroy();
      }
    }
  }

  /** Queues `parts` in order; `written` runs once the socket is done with them (sent, or the connection failed). */
  private send(parts: Buffer[], written?: () => void): void {
    if (this.socket.destroyed) return;
    if (!this.corked) {
      // Replies finished in the same turn leave in one write.
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(parts[i]!);
    this.socket.write(parts[last]!, written);
  }

  /** A simple reply without data. */
  private simpleReply(req: NbdRequest, error: number): void {
    const h = Buffer.allocUnsafe(16);
    writeSimpleHeader(h, 0, req, error);
    this.send([h]);
  }

  private chunkHeader(req: NbdRequest, flags: number, type: number, length: number): Buffer {
    const h = Buffer.allocUnsafe(20);
    writeChunkHeader(h, 0, req, flags, type, length);
    return h;
  }

  private errorReply(req: NbdRequest, error: number, message: string): void {
    if (!this.state.structuredReply) return this.simpleReply(req, error);
    const msg = Buffer.from(message.slice(0, 4096));
    const body = Buffer.allocUnsafe(6);
    body.writeUInt32BE(error, 0);
    body.writeUInt16BE(msg.length, 4);
    this.send([this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.length), body, msg]);
  }

  private doneReply(req: NbdRequest): void {
    if (!this.state.structuredReply) return this.simpleReply(req, 0);
    this.send([this.chunkHeader(req, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0)]);
  }

  private dispatch(req: NbdRequest): void {
    if (req.type === CMD.DISC) {
      // No reply: finish what is in flight, then close.
      this.disconnecting = true;
      this.updateFlow();
      void this.whenIdle().then(() => this.socket.end());
      return;
    }
    this.inFlight++;
    this.updateFlow();
    // One reaction per request, not a catch and a finally: each costs promises and a microtask.
    this.execute(req).then(this.requestDone, (err: unknown) => {
      try {
        this.failedReply(req, err);
      } finally {
        this.requestDone();
      }
    });
  }

  private failedReply(req: NbdRequest, err: unknown): void {
    if (err instanceof RequestError) return this.errorReply(req, err.nbdError, err.message);
    const e = err as { code?: string; message?: string };
    this.errorReply(req, nbdErrorOf(e.code), e.message ?? String(err));
  }

  private readonly requestDone = (): void => {
    this.inFlight--;
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    this.updateFlow();
    this.checkGone();
  };

  private readonly idleWaiters: Array<() => void> = [];

  private whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The checks every request passes before it touches the node. */
  private validate(req: NbdRequest): void {
    const allowed = ALLOWED_FLAGS[req.type];
    if (allowed === undefined) throw new RequestError(NBD_ERR.EINVAL, `unsupported command ${req.type}`);
    const valid = CMD_FLAG.FUA | (req.type === CMD.READ && !this.state.structuredReply ? 0 : allowed);
    if (req.flags & ~valid) throw new RequestError(NBD_ERR.EINVAL, `unsupported flags 0x${req.flags.toString(16)} for command ${req.type}`);
    const writes = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES || req.type === CMD.TRIM;
    if (writes && !this.exp.entry.writable) throw new RequestError(NBD_ERR.EPERM, 'export is read-only');
    if (req.oversized || (req.type === CMD.READ && req.length > MAX_PAYLOAD)) {
      throw new RequestError(NBD_ERR.EINVAL, `length ${req.length} is larger than the maximum of ${MAX_PAYLOAD}`);
    }
    if (req.type === CMD.FLUSH) return;
    const size = this.exp.backend.length;
    if (req.offset > size || req.length > size - req.offset) {
      const past = req.type === CMD.WRITE || req.type === CMD.WRITE_ZEROES ? NBD_ERR.ENOSPC : NBD_ERR.EINVAL;
      throw new RequestError(past, `operation past the end of the export (offset ${req.offset}, length ${req.length}, size ${size})`);
    }
    if (req.type === CMD.BLOCK_STATUS) {
      if (this.metaContexts.length === 0) throw new RequestError(NBD_ERR.EINVAL, 'no meta context was negotiated');
      if (req.length === 0) throw new RequestError(NBD_ERR.EINVAL, 'block status of an empty range');
    }
  }

  private async execute(req: NbdRequest): Promise<void> {
    if (!this.exp.alive()) {
      // The node now lives in another context: serving on from here would race with its new owner.
      // Closed once this error reply has left.
      setImmediate(() => this.close());
      throw new RequestError(NBD_ERR.ESHUTDOWN, 'the export is shutting down');
    }
    const backend = this.exp.backend;
    try {
      this.validate(req);
    } catch (err) {
      // Refused here, it never reaches the node's request layer: count it as the invalid request it is there.
      const kind = ACCT_KIND[req.type];
      if (kind !== undefined) backend.countInvalid(kind);
      throw err;
    }
    const fua = (req.flags & CMD_FLAG.FUA) !== 0 || this.exp.entry.writethrough;
    switch (req.type) {
      case CMD.READ:
        return this.read(req);
      case CMD.WRITE:
        if (req.length > 0) {
          await backend.write(req.offset, req.payload!, { fua });
          // Pooled when it was joined from several chunks; kept out of the pool after a failure (pieces may still be under way).
          releaseReadBuffer(req.payload!);
        }
        return this.doneReply(req);
      case CMD.WRITE_ZEROES:
        if (req.length > 0) {
          await backend.writeZeroes(req.offset, req.length, {
            fua,
            mayUnmap: (req.flags & CMD_FLAG.NO_HOLE) === 0,
            noFallback: (req.flags & CMD_FLAG.FAST_ZERO) !== 0,
          });
        }
        return this.doneReply(req);
      case CMD.TRIM:
        if (req.length > 0) await backend.discard(req.offset, req.length);
        if (fua) await backend.flush();
        return this.doneReply(req);
      case CMD.FLUSH:
        await backend.flush();
        return this.doneReply(req);
      case CMD.CACHE:
        // Advisory: the node has no cache to fill; the range was checked.
        return this.doneReply(req);
      case CMD.BLOCK_STATUS:
        return this.blockStatus(req);
    }
  }

  private async read(req: NbdRequest): Promise<void> {
    const backend = this.exp.backend;
    if (req.length === 0) return this.doneReply(req);
    if (!this.state.structuredReply || req.flags & CMD_FLAG.DF) {
      const { whole, data } = takeReplyBuffer(req.length);
      // On failure the buffer is left to the collector: pieces of the read may still be filling it.
      await backend.read(req.offset, data);
      const written = (): void => releaseReadBuffer(whole);
      if (!this.state.structuredReply) return this.simpleDataReply(req, whole, data.length, written);
      return this.sendChunks(req, [{ offset: req.offset, whole, data }], written);
    }
    // Holes go out as hole chunks: the client learns they read as zero without the bytes crossing the wire.
    const chunks: ReadChunk[] = [];
    const release = (): void => {
      for (const c of chunks) if (c.whole) releaseReadBuffer(c.whole);
    };
    const end = req.offset + req.length;
    try {
      for (let pos = req.offset; pos < end; ) {
        const st = await backend.blockStatus(pos, end - pos);
        const len = st.bytes;
        const last = chunks[chunks.length - 1];
        if (st.status & STATUS.ZERO) {
          if (last?.hole !== undefined) last.hole += len;
          else chunks.push({ offset: pos, hole: len });
        } else {
          const { whole, data } = takeReplyBuffer(len);
          chunks.push({ offset: pos, whole, data });
          await backend.read(pos, data);
        }
        pos += len;
      }
    } catch (err) {
      // Pooled again only the chunks read in full; the one that failed may still be filling.
      for (const c of chunks.slice(0, -1)) if (c.whole) releaseReadBuffer(c.whole);
      throw err;
    }
    this.sendChunks(req, chunks, release);
  }

  /** A simple reply carrying data: its header goes into the headroom in front of the data, so the reply is one buffer. */
  private simpleDataReply(req: NbdRequest, whole: Buffer, length: number, written: () => void): void {
    const at = REPLY_HEADROOM - 16;
    writeSimpleHeader(whole, at, req, 0);
    this.send([whole.subarray(at, REPLY_HEADROOM + length)], written);
  }

  private sendChunks(req: NbdRequest, chunks: ReadChunk[], written?: () => void): void {
    const parts: Buffer[] = [];
    chunks.forEach((c, i) => {
      const flags = i === chunks.length - 1 ? REPLY_FLAG_DONE : 0;
      if (c.data) {
        // Chunk header and offset in the headroom just in front of the data: one buffer, no copy.
        const h = c.whole!;
        const at = REPLY_HEADROOM - 28;
        writeChunkHeader(h, at, req, flags, REPLY_TYPE.OFFSET_DATA, 8 + c.data.length);
        writeOffset(h, c.offset, at + 20);
        parts.push(h.subarray(at, REPLY_HEADROOM + c.data.length));
      } else {
        const h = this.chunkHeader(req, flags, REPLY_TYPE.OFFSET_HOLE, 12);
        const body = Buffer.allocUnsafe(12);
        writeOffset(body, c.offset, 0);
        body.writeUInt32BE(c.hole!, 8);
        parts.push(h, body);
      }
    });
    this.send(parts, written);
  }

  private async blockStatus(req: NbdRequest): Promise<void> {
    const contexts = this.metaContexts;
    const one = (req.flags & CMD_FLAG.REQ_ONE) !== 0;
    const replies: Array<{ id: number; extents: Array<[number, number]> }> = [];
    for (const [name, id] of contexts) {
      const bitmap = this.exp.entry.bitmaps.find((b) => b.context === name);
      if (bitmap) {
        replies.push({ id, extents: dirtyBitmapExtents(bitmap.bits, req.offset, req.length, one ? 1 : MAX_EXTENTS) });
        continue;
      }
      const extents: Array<[number, number]> = [];
      const end = req.offset + req.length;
      for (let pos = req.offset; pos < end && extents.length < MAX_EXTENTS; ) {
        const st = await this.exp.backend.blockStatus(pos, end - pos);
        let flags: number;
        if (name === META_BASE_ALLOCATION) {
          flags = (st.status & STATUS.DATA ? 0 : STATE_HOLE) | (st.status & STATUS.ZERO ? STATE_ZERO : 0);
        } else if (name === META_ALLOCATION_DEPTH) {
          flags = st.depth ?? (st.status & STATUS.ALLOCATED ? 1 : 0);
        } else {
          flags = 0;
        }
        const last = extents[extents.length - 1];
        if (last && last[1] === flags) last[0] += st.bytes;
        else extents.push([st.bytes, flags]);
        pos += st.bytes;
        if (one) break;
      }
      replies.push({ id, extents });
    }
    const parts: Buffer[] = [];
    replies.forEach((r, i) => {
      const body = Buffer.allocUnsafe(4 + r.extents.length * 8);
      body.writeUInt32BE(r.id, 0);
      r.extents.forEach(([len, flags], j) => {
        body.writeUInt32BE(len, 4 + j * 8);
        body.writeUInt32BE(flags >>> 0, 8 + j * 8);
      });
      parts.push(this.chunkHeader(req, i === replies.length - 1 ? REPLY_FLAG_DONE : 0, REPLY_TYPE.BLOCK_STATUS, body.length), body);
    });
    this.send(parts);
  }
}
