/**
 * One negotiated NBD connection in the transmission phase: requests go out
 * with a handle each, replies (simple or structured) come back in any order
 * and are matched by handle. Read data is copied straight from the socket
 * into the caller's buffer; hole chunks fill it with zeros. When the
 * connection breaks, every request still waiting fails with
 * `ConnectionLost`, which the reconnect layer (`client.ts`) may resend.
 */
import type * as net from 'node:net';
import { ByteQueue } from '../../../exports/nbd/byte-queue';
import * as P from '../../../exports/nbd/protocol';
import { IoError } from '../../common/io-types';
import type { NbdExportInfo } from './common';

/** The connection went away before the request's reply was complete: the request may be sent again. */
export class ConnectionLost extends IoError {
  constructor(message: string) {
    super('EIO', message);
  }
}

/** QEMU keeps at most this many requests in flight on one connection. */
export const MAX_IN_FLIGHT = 16;

const WIRE_ERRORS: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};

function serverError(value: number, message?: string): IoError {
  const code = WIRE_ERRORS[value] ?? 'EINVAL';
  return new IoError(code, message ? `server reported: ${message}` : `server reported error ${code}`);
}

export interface Extent {
  length: number;
  flags: number;
}

interface Pending {
  cmd: number;
  offset: number;
  length: number;
  /** READ: where the data goes. */
  buffer?: Buffer;
  /** BLOCK_STATUS: the first extent of the negotiated context. */
  extent?: Extent;
  error?: IoError;
  resolve: (extent: Extent | undefined) => void;
  reject: (err: Error) => void;
}

type ParseState =
  | { kind: 'magic' }
  | { kind: 'simple-header' }
  | { kind: 'chunk-header' }
  /** A structured chunk's payload, collected whole (small: errors, holes, block status). */
  | { kind: 'chunk-payload'; pending: Pending; handle: bigint; type: number; length: number; done: boolean }
  /** The offset that starts a data chunk. */
  | { kind: 'data-offset'; pending: Pending; handle: bigint; dataLength: number; done: boolean }
  /** Read data still to copy into the request's buffer at `at`. */
  | { kind: 'data'; pending: Pending; handle: bigint; at: number; left: number; done: boolean };

/** Bytes each state needs before it can go on (data copies what there is). */
function needed(st: ParseState): number {
  switch (st.kind) {
    case 'magic':
      return 4;
    case 'simple-header':
      return 12;
    case 'chunk-header':
      return 16;
    case 'chunk-payload':
      return st.length;
    case 'data-offset':
      return 8;
    case 'data':
      return 1;
  }
}

export class Transmission {
  private readonly queue = new ByteQueue();
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private state: ParseState = { kind: 'magic' };
  private broken: Error | undefined;
  private readonly slotWaiters: Array<() => void> = [];
  private closeListeners: Array<(err: Error) => void> = [];

  constructor(
    private readonly socket: net.Socket,
    readonly info: NbdExportInfo,
    leftover: Buffer,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.parse();
    });
    socket.on('error', (err) => this.fail(new ConnectionLost(`NBD connection failed: ${err.message}`)));
    socket.on('close', () => this.fail(new ConnectionLost('NBD server closed the connection')));
    socket.on('end', () => this.fail(new ConnectionLost('NBD server closed the connection')));
    if (leftover.length > 0) {
      this.queue.push(leftover);
      this.parse();
    }
  }

  get alive(): boolean {
    return this.broken === undefined;
  }

  /** Called once, when the connection breaks (not when closed by `disconnect`). */
  onClose(listener: (err: Error) => void): void {
    if (this.broken) listener(this.broken);
    else this.closeListeners.push(listener);
  }

  /**
   * Sends one request and resolves when its reply is complete. READ fills
   * `buffer`; BLOCK_STATUS resolves with the first extent.
   */
  async request(cmd: number, flags: number, offset: number, length: number, payload?: Buffer, buffer?: Buffer): Promise<Extent | undefined> {
    while (this.pending.size >= MAX_IN_FLIGHT && !this.broken) await new Promise<void>((r) => this.slotWaiters.push(r));
    if (this.broken) throw this.broken;
    const handle = this.nextHandle++;
    const header = Buffer.allocUnsafe(28);
    header.writeUInt32BE(P.REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(cmd, 6);
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { cmd, offset, length, buffer, resolve, reject });
      if (payload) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(payload);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  /** Soft disconnect: NBD_CMD_DISC after the replies still due, then close. */
  async disconnect(): Promise<void> {
    if (this.broken) return;
    while (this.pending.size > 0 && !this.broken) await new Promise<void>((r) => this.slotWaiters.push(r));
    this.closeListeners = [];
    if (this.broken) return;
    const header = Buffer.alloc(28);
    header.writeUInt32BE(P.REQUEST_MAGIC, 0);
    header.writeUInt16BE(P.CMD.DISC, 6);
    header.writeBigUInt64BE(this.nextHandle++, 8);
    // No reply comes to NBD_CMD_DISC: the socket closes once it is written.
    this.fail(new ConnectionLost('NBD connection closed'), false);
    this.socket.end(header);
  }

  /** Hard close, for a node going away while the server does not answer. */
  destroy(): void {
    this.closeListeners = [];
    this.fail(new ConnectionLost('NBD connection closed'));
    this.socket.destroy();
  }

  private fail(err: Error, destroy = true): void {
    if (this.broken) return;
    this.broken = err;
    if (destroy) this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(err);
    this.wakeSlots();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const l of listeners) l(err);
  }

  /** A reply that breaks the protocol: nothing after it can be trusted. */
  private protocolError(what: string): void {
    this.fail(new ConnectionLost(`NBD protocol error: ${what}`));
  }

  private wakeSlots(): void {
    // Every waiter checks again for itself: a free slot, an empty queue (disconnect), or a broken connection.
    const waiters = this.slotWaiters.splice(0);
    for (const w of waiters) w();
  }

  private finish(handle: bigint, p: Pending | undefined): void {
    if (!p) return;
    this.pending.delete(handle);
    if (p.error) p.reject(p.error);
    else if (p.cmd === P.CMD.BLOCK_STATUS && !p.extent && this.info.metaContextId !== undefined) p.reject(new IoError('EIO', 'server sent no block status'));
    else p.resolve(p.extent);
    this.wakeSlots();
  }

  private parse(): void {
    while (!this.broken) {
      const st = this.state;
      if (st.kind === 'data') {
        if (st.left > 0) {
          if (this.queue.length === 0) return;
          const piece = this.queue.take(Math.min(this.queue.length, st.left));
          st.pending.buffer?.set(piece, st.at);
          st.at += piece.length;
          st.left -= piece.length;
          if (st.left > 0) return;
        }
        this.state = { kind: 'magic' };
        if (st.done) this.finish(st.handle, st.pending);
        continue;
      }
      const n = needed(st);
      if (this.queue.length < n) return;
      const bytes = n > 0 ? this.queue.take(n) : Buffer.alloc(0);
      switch (st.kind) {
        case 'magic': {
          const magic = bytes.readUInt32BE(0);
          if (magic === P.SIMPLE_REPLY_MAGIC) this.state = { kind: 'simple-header' };
          else if (magic === P.STRUCTURED_REPLY_MAGIC && this.info.structuredReplies) this.state = { kind: 'chunk-header' };
          else return this.protocolError(`bad reply magic 0x${magic.toString(16)}`);
          break;
        }
        case 'simple-header':
          this.simpleReply(bytes);
          break;
        case 'chunk-header':
          this.chunkHeader(bytes);
          break;
        case 'data-offset': {
          const at = Number(bytes.readBigUInt64BE(0)) - st.pending.offset;
          if (at < 0 || st.dataLength === 0 || at + st.dataLength > st.pending.length) return this.protocolError('data chunk outside the request');
          this.state = { kind: 'data', pending: st.pending, handle: st.handle, at, left: st.dataLength, done: st.done };
          break;
        }
        case 'chunk-payload':
          this.state = { kind: 'magic' };
          this.chunk(st.pending, st.handle, st.type, bytes, st.done);
          break;
      }
    }
  }

  private simpleReply(head: Buffer): void {
    const error = head.readUInt32BE(0);
    const handle = head.readBigUInt64BE(4);
    const p = this.pending.get(handle);
    if (!p) return this.protocolError(`reply for unknown handle ${handle}`);
    this.state = { kind: 'magic' };
    if (error !== 0) {
      p.error = serverError(error);
      return this.finish(handle, p);
    }
    if (p.cmd === P.CMD.READ) {
      if (this.info.structuredReplies) return this.protocolError('simple reply to a read after structured replies were negotiated');
      this.state = { kind: 'data', pending: p, handle, at: 0, left: p.length, done: true };
      return;
    }
    this.finish(handle, p);
  }

  private chunkHeader(head: Buffer): void {
    const flags = head.readUInt16BE(0);
    const type = head.readUInt16BE(2);
    const handle = head.readBigUInt64BE(4);
    const length = head.readUInt32BE(12);
    const p = this.pending.get(handle);
    if (!p) return this.protocolError(`reply chunk for unknown handle ${handle}`);
    const done = (flags & P.REPLY_FLAG_DONE) !== 0;
    if (type === P.REPLY_TYPE.OFFSET_DATA) {
      if (p.cmd !== P.CMD.READ || length <= 8) return this.protocolError('unexpected data chunk');
      this.state = { kind: 'data-offset', pending: p, handle, dataLength: length - 8, done };
      return;
    }
    if (length > 64 * 1024 * 1024) return this.protocolError('oversized reply chunk');
    this.state = { kind: 'chunk-payload', pending: p, handle, type, length, done };
  }

  private chunk(p: Pending, handle: bigint, type: number, payload: Buffer, done: boolean): void {
    switch (type) {
      case P.REPLY_TYPE.NONE:
        if (!done || payload.length !== 0) return this.protocolError('bad NONE chunk');
        break;
      case P.REPLY_TYPE.OFFSET_HOLE: {
        if (p.cmd !== P.CMD.READ || payload.length !== 12) return this.protocolError('bad hole chunk');
        const at = Number(payload.readBigUInt64BE(0)) - p.offset;
        const size = payload.readUInt32BE(8);
        if (at < 0 || size === 0 || at + size > p.length) return this.protocolError('hole chunk outside the request');
        p.buffer?.fill(0, at, at + size);
        break;
      }
      case P.REPLY_TYPE.BLOCK_STATUS: {
        if (p.cmd !== P.CMD.BLOCK_STATUS || payload.length < 12 || (payload.length - 4) % 8 !== 0) return this.protocolError('bad block status chunk');
        if (payload.readUInt32BE(0) === this.info.metaContextId && !p.extent) {
          p.extent = { length: payload.readUInt32BE(4), flags: payload.readUInt32BE(8) };
        }
        break;
      }
      case P.REPLY_TYPE.ERROR:
      case P.REPLY_TYPE.ERROR_OFFSET: {
        if (payload.length < 6) return this.protocolError('bad error chunk');
        const msgLength = payload.readUInt16BE(4);
        if (6 + msgLength > payload.length) return this.protocolError('bad error chunk');
        p.error ??= serverError(payload.readUInt32BE(0), payload.subarray(6, 6 + msgLength).toString('utf8'));
        break;
      }
      default:
        if (type & (1 << 15)) {
          // An unknown error type still means the request failed.
          p.error ??= new IoError('EIO', `server sent unknown error chunk type ${type}`);
          break;
        }
        return this.protocolError(`unknown reply chunk type ${type}`);
    }
    if (done) this.finish(handle, p);
  }
}
