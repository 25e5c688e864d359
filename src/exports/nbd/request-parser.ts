/**
 * The transmission-phase request parser, as an explicit state machine:
 * `header` waits for a 28-byte request header, `payload` for the data of a
 * WRITE, `skip` throws away the payload of a WRITE too large to accept (the
 * request still gets its error reply), `failed` is final. `push` returns
 * when bytes run short; limits come in as options; a malformed header is the
 * one failure path (the connection must be dropped: framing is lost).
 */
import { ByteQueue } from './byte-queue';
import { CMD, REQUEST_MAGIC } from './protocol';

export const REQUEST_HEADER_SIZE = 28;

export interface NbdRequest {
  flags: number;
  type: number;
  /** The client's opaque handle, echoed in every reply. */
  handle: Buffer;
  /** Beyond Number.MAX_SAFE_INTEGER the offset is reported as Infinity: out of range for any export. */
  offset: number;
  length: number;
  /** The data of a WRITE. */
  payload?: Buffer;
  /** Set when a WRITE's payload was larger than the limit and was discarded. */
  oversized?: boolean;
}

export class NbdFramingError extends Error {
  readonly code = 'NBD_FRAMING';
}

type State = { name: 'header' } | { name: 'payload'; req: NbdRequest } | { name: 'skip'; req: NbdRequest; left: number } | { name: 'failed' };

export interface RequestParserOptions {
  maxPayload: number;
  onRequest(req: NbdRequest): void;
  /** Where a WRITE payload that arrived in several chunks is joined (a payload inside one chunk is handed on as it is). */
  payloadBuffer?: (length: number) => Buffer;
}

export class RequestParser {
  private readonly queue = new ByteQueue();
  private state: State = { name: 'header' };
  /** While true, `push` only queues: the connection holds back (in-flight cap, disconnect). */
  paused = false;

  constructor(private readonly opts: RequestParserOptions) {}

  get failed(): boolean {
    return this.state.name === 'failed';
  }

  /** Queues `chunk` and emits every complete request; throws NbdFramingError on a bad header. */
  push(chunk: Buffer): void {
    this.queue.push(chunk);
    this.run();
  }

  /** Parses what is queued (after `paused` is lifted). */
  run(): void {
    while (!this.paused) {
      const st = this.state;
      switch (st.name) {
        case 'failed':
          return;
        case 'header': {
          if (this.queue.length < REQUEST_HEADER_SIZE) return;
          const h = this.queue.take(REQUEST_HEADER_SIZE);
          if (h.readUInt32BE(0) !== REQUEST_MAGIC) {
            this.state = { name: 'failed' };
            throw new NbdFramingError(`bad request magic 0x${h.readUInt32BE(0).toString(16)}`);
          }
          const big = h.readBigUInt64BE(16);
          const req: NbdRequest = {
            flags: h.readUInt16BE(4),
            type: h.readUInt16BE(6),
            handle: Buffer.from(h.subarray(8, 16)),
            offset: big > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(big),
            length: h.readUInt32BE(24),
          };
          if (req.type !== CMD.WRITE || req.length === 0) {
            this.opts.onRequest(req);
          } else if (req.length > this.opts.maxPayload) {
            req.oversized = true;
            this.state = { name: 'skip', req, left: req.length };
          } else {
            this.state = { name: 'payload', req };
          }
          break;
        }
        case 'payload': {
          if (this.queue.length < st.req.length) return;
          st.req.payload = this.queue.take(st.req.length, this.opts.payloadBuffer);
          this.state = { name: 'header' };
          this.opts.onRequest(st.req);
          break;
        }
        case 'skip': {
          st.left -= this.queue.skip(st.left);
          if (st.left > 0) return;
          this.state = { name: 'header' };
          this.opts.onRequest(st.req);
          break;
        }
      }
    }
  }

  /** Bytes received and not yet parsed. */
  leftover(): Buffer {
    return this.queue.drain();
  }
}
