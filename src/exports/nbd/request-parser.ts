/**
 * The transmission-phase request parser, as an explicit state machine:
 * `header` waits for a 28-byte request header, `payload` for the data of a
 * WRITE, `skip` throws away the payload of a WRITE too large to accept (the
 * request still gets its error reply), `failed` is final. Input stops when
 * bytes run short; limits come in as options; a malformed header is the
 * one failure path (the connection must be dropped: framing is lost).
 *
 * Bytes come in two ways. A stream that delivers chunks of its own (a TLS
 * session, a relayed stream) calls `push`. A socket that can read into a
 * buffer of our choosing asks `readBuffer` where the next bytes should go
 * and reports them with `received`: while a large WRITE payload is being
 * received, that is the unfilled rest of the payload's own buffer, so the
 * kernel copies the data straight to where the write takes it from;
 * otherwise a scratch buffer that holds headers and small requests.
 */
import { ByteQueue } from './byte-queue';
import { CMD, REQUEST_MAGIC } from './protocol';

export const REQUEST_HEADER_SIZE = 28;

/** The scratch buffer's size: many small requests per read. */
const SCRATCH_SIZE = 64 * 1024;
/** A payload with at least this much still to come is read in place; a smaller rest comes through the scratch buffer with whatever follows it. */
const IN_PLACE_FROM = 16 * 1024;

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

/** A WRITE whose payload is coming: `buf` (once allocated) holds its first `filled` bytes; `inPlace` once a read landed in it directly. */
interface PayloadState {
  name: 'payload';
  req: NbdRequest;
  buf?: Buffer;
  filled: number;
  inPlace: boolean;
}

type State = { name: 'header' } | PayloadState | { name: 'skip'; req: NbdRequest; left: number } | { name: 'failed' };

export interface RequestParserOptions {
  maxPayload: number;
  onRequest(req: NbdRequest): void;
  /** Where a WRITE payload is gathered when it is not handed on as the chunk it arrived in. */
  payloadBuffer?: (length: number) => Buffer;
}

export class RequestParser {
  private readonly queue = new ByteQueue();
  private state: State = { name: 'header' };
  /** While true, input is only queued: the connection holds back (in-flight cap, disconnect). */
  paused = false;
  /** True while the bytes being parsed sit in memory that is reused after this turn: nothing may keep a view of them. */
  private transient = false;
  private scratch: Buffer | undefined;
  /** The last buffer `readBuffer` handed out that points into a payload. */
  private inPlaceTarget: Buffer | undefined;
  /** The last WRITE's payload was read in place: a run of large WRITEs is likely, so read just the next header and let its payload land in place too. */
  private headerAlone = false;

  constructor(private readonly opts: RequestParserOptions) {}

  get failed(): boolean {
    return this.state.name === 'failed';
  }

  /** Queues `chunk` (kept as it is where possible) and emits every complete request; throws NbdFramingError on a bad header. */
  push(chunk: Buffer): void {
    this.queue.push(chunk);
    this.run();
  }

  /** Where the next bytes read from the socket should go; report them with `received`. */
  readBuffer(): Buffer {
    const st = this.state;
    if (st.name === 'payload' && this.queue.length === 0 && st.req.length - st.filled >= IN_PLACE_FROM) {
      st.buf ??= this.allocPayload(st.req.length);
      this.inPlaceTarget = st.buf.subarray(st.filled);
      return this.inPlaceTarget;
    }
    this.inPlaceTarget = undefined;
    this.scratch ??= Buffer.allocUnsafeSlow(SCRATCH_SIZE);
    if (this.headerAlone && st.name === 'header' && this.queue.length < REQUEST_HEADER_SIZE) {
      return this.scratch.subarray(0, REQUEST_HEADER_SIZE - this.queue.length);
    }
    return this.scratch;
  }

  /** `n` bytes were read into `buf`, the buffer `readBuffer` returned last; emits every complete request and throws like `push`. */
  received(buf: Buffer, n: number): void {
    const st = this.state;
    if (buf === this.inPlaceTarget && st.name === 'payload' && st.buf !== undefined && buf.byteOffset === st.buf.byteOffset + st.filled) {
      this.inPlaceTarget = undefined;
      st.filled += n;
      st.inPlace = true;
      this.run();
      return;
    }
    // The scratch buffer: it is read into again next time, so whatever is still queued then gets a copy of its own.
    this.transient = true;
    try {
      this.push(buf.subarray(0, n));
    } finally {
      this.transient = false;
      this.queue.detach();
    }
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
            this.headerAlone = false;
            this.opts.onRequest(req);
          } else if (req.length > this.opts.maxPayload) {
            req.oversized = true;
            this.headerAlone = false;
            this.state = { name: 'skip', req, left: req.length };
          } else {
            this.state = { name: 'payload', req, filled: 0, inPlace: false };
          }
          break;
        }
        case 'payload': {
          const length = st.req.length;
          if (st.buf === undefined) {
            if (this.queue.length >= length && !this.transient) {
              // All there: inside one chunk it is handed on without a copy.
              st.req.payload = this.queue.take(length, this.opts.payloadBuffer);
              this.finishPayload(st);
              break;
            }
            if (this.queue.length === 0) return;
            st.buf = this.allocPayload(length);
          }
          st.filled += this.queue.takeInto(st.buf, st.filled);
          if (st.filled < length) return;
          st.req.payload = st.buf;
          this.finishPayload(st);
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

  private finishPayload(st: PayloadState): void {
    this.headerAlone = st.inPlace;
    this.state = { name: 'header' };
    this.opts.onRequest(st.req);
  }

  private allocPayload(length: number): Buffer {
    return (this.opts.payloadBuffer ?? Buffer.allocUnsafe)(length);
  }
}
