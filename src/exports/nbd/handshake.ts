/**
 * Fixed-newstyle negotiation, server side, as an explicit state machine:
 * `client-flags` (4 bytes), then `option-header` (16 bytes) and
 * `option-data` (the option's payload) in a loop, or `option-skip` for a
 * payload too long to buffer, until EXPORT_NAME or a successful GO ends it
 * (`done`) or the client aborts or misbehaves (`closed`). Unknown options
 * get NBD_REP_ERR_UNSUP and negotiation goes on.
 *
 * With TLS credentials the server is in the protocol's FORCEDTLS mode, as
 * QEMU's is: until STARTTLS succeeds every option but STARTTLS gets
 * NBD_REP_ERR_TLS_REQD (ABORT too, then the connection closes), and
 * EXPORT_NAME, which cannot be refused with a reply, ends the connection.
 * STARTTLS moves to `tls-upgrade` until the owner of the socket reports the
 * TLS session established (`tlsEstablished`); whatever the client sent
 * before that is discarded and every negotiated state starts afresh.
 */
import { ByteQueue } from './byte-queue';
import type { NbdExportEntry, NegotiatedState } from './messages';
import {
  EXPORT_NAME_PADDING,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  KNOWN_CLIENT_FLAGS,
  MAX_OPTION_LENGTH,
  MAX_PAYLOAD,
  MAX_STRING,
  META_ALLOCATION_DEPTH,
  META_BASE_ALLOCATION,
  NBDMAGIC,
  OPT,
  OPTION_REPLY_MAGIC,
  REP,
} from './protocol';
import { transmissionFlags } from './export-flags';

/** What negotiation reads about exports. */
export interface ExportDirectory {
  find(name: string): NbdExportEntry | undefined;
  /** Oldest first. */
  list(): NbdExportEntry[];
  /** The export's current size. */
  sizeOf(entry: NbdExportEntry): number;
  /** Whether this context can serve the export, or hand the connection (a TLS session if `tls`) to the context that can. */
  canServe(entry: NbdExportEntry, tls: boolean): boolean;
}

export interface HandshakeOutput {
  write(buf: Buffer): void;
  /** Negotiation failed or was aborted: drop the connection. */
  close(reason: string): void;
  /** The client entered the transmission phase of `entry`; `leftover` holds bytes already received. */
  done(entry: NbdExportEntry, state: NegotiatedState, leftover: Buffer): void;
  /** STARTTLS was acknowledged: run the TLS handshake on the socket, then call `tlsEstablished()`. */
  startTls(): void;
}

type State =
  | { name: 'client-flags' }
  | { name: 'option-header' }
  | { name: 'option-data'; option: number; length: number }
  | { name: 'option-skip'; option: number; left: number }
  | { name: 'tls-upgrade' }
  | { name: 'done' }
  | { name: 'closed' };

/** Option names as the reference words them in error replies. */
const OPTION_NAMES: Record<number, string> = {
  1: 'export name',
  2: 'abort',
  3: 'list',
  4: 'peek export',
  5: 'starttls',
  6: 'info',
  7: 'go',
  8: 'structured reply',
  9: 'list meta context',
  10: 'set meta context',
};

function optionName(option: number): string {
  return OPTION_NAMES[option] ?? '<unknown>';
}

/** The contexts an export offers, with the ids QEMU gives them. */
function contextsOf(entry: NbdExportEntry): Array<[string, number]> {
  const out: Array<[string, number]> = [[META_BASE_ALLOCATION, 0]];
  if (entry.allocationDepth) out.push([META_ALLOCATION_DEPTH, 1]);
  entry.bitmaps.forEach((b, i) => out.push([b.context, 2 + i]));
  return out;
}

/** Whether `query` selects `ctx`: an exact name, or for LIST a namespace prefix such as "qemu:". */
function matches(query: string, ctx: string, listing: boolean): boolean {
  if (query === ctx) return true;
  return listing && query.endsWith(':') && ctx.startsWith(query);
}

export function greeting(): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
  return b;
}

export class Handshake {
  private readonly queue = new ByteQueue();
  private state: State = { name: 'client-flags' };
  private noZeroes = false;
  private structuredReply = false;
  private metaContexts: Record<string, number> = {};
  /** The export SET_META_CONTEXT was for: BLOCK_STATUS is allowed only on that one. */
  private metaExport: string | undefined;

  /** Whether the options so far came over TLS. */
  private tlsActive = false;

  constructor(
    private readonly exports: ExportDirectory,
    private readonly out: HandshakeOutput,
    /** The server has TLS credentials: nothing but STARTTLS before TLS. */
    private readonly tlsRequired = false,
  ) {}

  /** The TLS session is up: negotiation starts afresh inside it. */
  tlsEstablished(): void {
    if (this.state.name !== 'tls-upgrade') return;
    this.tlsActive = true;
    this.structuredReply = false;
    this.metaContexts = {};
    this.metaExport = undefined;
    this.state = { name: 'option-header' };
  }

  get finished(): boolean {
    return this.state.name === 'done' || this.state.name === 'closed';
  }

  push(chunk: Buffer): void {
    // Bytes that reach negotiation while TLS starts came in plaintext behind STARTTLS: never trust them.
    if (this.finished || this.state.name === 'tls-upgrade') return;
    this.queue.push(chunk);
    this.run();
  }

  private close(reason: string): void {
    this.state = { name: 'closed' };
    this.out.close(reason);
  }

  private run(): void {
    for (;;) {
      const st = this.state;
      switch (st.name) {
        case 'done':
        case 'closed':
        case 'tls-upgrade':
          return;
        case 'client-flags': {
          if (this.queue.length < 4) return;
          const flags = this.queue.take(4).readUInt32BE(0);
          if (flags & ~KNOWN_CLIENT_FLAGS) return this.close(`unknown client flags 0x${flags.toString(16)}`);
          if (!(flags & FLAG_C_FIXED_NEWSTYLE)) return this.close('client does not speak fixed newstyle');
          this.noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
          this.state = { name: 'option-header' };
          break;
        }
        case 'option-header': {
          if (this.queue.length < 16) return;
          const h = this.queue.take(16);
          if (h.readBigUInt64BE(0) !== IHAVEOPT) return this.close('bad option magic');
          const option = h.readUInt32BE(8);
          const length = h.readUInt32BE(12);
          if (length > MAX_OPTION_LENGTH) {
            // Not worth buffering; refuse once it has gone by, unless it is an export name (no error reply is possible).
            if (option === OPT.EXPORT_NAME) return this.close('export name too long');
            this.state = { name: 'option-skip', option, left: length };
          } else {
            this.state = { name: 'option-data', option, length };
          }
          break;
        }
        case 'option-skip': {
          st.left -= this.queue.skip(st.left);
          if (st.left > 0) return;
          this.state = { name: 'option-header' };
          this.reply(st.option, REP.ERR_TOO_BIG, Buffer.from('option too long'));
          break;
        }
        case 'option-data': {
          if (this.queue.length < st.length) return;
          const data = this.queue.take(st.length);
          this.state = { name: 'option-header' };
          this.handleOption(st.option, data);
          break;
        }
      }
    }
  }

  private reply(option: number, type: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    this.out.write(data.length > 0 ? Buffer.concat([h, data]) : h);
  }

  private error(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message));
  }

  private handleOption(option: number, data: Buffer): void {
    if (this.tlsRequired && !this.tlsActive) return this.beforeTls(option, data);
    switch (option) {
      case OPT.EXPORT_NAME:
        return this.exportName(data);
      case OPT.ABORT:
        this.reply(option, REP.ACK);
        return this.close('client aborted negotiation');
      case OPT.LIST:
        return this.list(data);
      case OPT.STARTTLS:
        // Refused, and negotiation goes on: only a server waiting for TLS drops such a client.
        if (data.length !== 0) return this.error(option, REP.ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
        if (this.tlsActive) return this.error(option, REP.ERR_INVALID, 'TLS already enabled');
        return this.error(option, REP.ERR_POLICY, 'TLS not configured');
      case OPT.INFO:
      case OPT.GO:
        return this.infoOrGo(option, data);
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) return this.error(option, REP.ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
        if (this.structuredReply) return this.error(option, REP.ERR_INVALID, 'structured reply already negotiated');
        this.structuredReply = true;
        return this.reply(option, REP.ACK);
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        return this.error(option, REP.ERR_UNSUP, `Unsupported option ${option} (${optionName(option)})`);
    }
  }

  /** FORCEDTLS: the options a client may send before TLS. */
  private beforeTls(option: number, data: Buffer): void {
    switch (option) {
      case OPT.STARTTLS:
        if (data.length !== 0) {
          // A client that cannot start TLS correctly is dropped.
          this.error(option, REP.ERR_INVALID, `option '${optionName(option)}' has unexpected length`);
          return this.close('STARTTLS with a payload');
        }
        this.reply(option, REP.ACK);
        this.state = { name: 'tls-upgrade' };
        this.queue.drain();
        return this.out.startTls();
      case OPT.EXPORT_NAME:
        // No error reply is possible: the connection ends.
        return this.close(`Option 0x${option.toString(16)} not permitted before TLS`);
      default:
        this.error(option, REP.ERR_TLS_REQD, `Option 0x${option.toString(16)} not permitted before TLS`);
        if (option === OPT.ABORT) this.close('client aborted negotiation');
    }
  }

  private negotiated(entry: NbdExportEntry): NegotiatedState {
    return {
      exportName: entry.name,
      structuredReply: this.structuredReply,
      metaContexts: this.metaExport === entry.name ? this.metaContexts : {},
    };
  }

  private exportInfo(entry: NbdExportEntry): Buffer {
    const b = Buffer.alloc(10);
    b.writeBigUInt64BE(BigInt(this.exports.sizeOf(entry)), 0);
    b.writeUInt16BE(transmissionFlags(entry), 8);
    return b;
  }

  private exportName(data: Buffer): void {
    const entry = this.exports.find(data.toString('utf8'));
    if (!entry || !this.exports.canServe(entry, this.tlsActive)) return this.close(`export '${data.toString('utf8')}' not present`);
    const info = this.exportInfo(entry);
    this.out.write(this.noZeroes ? info : Buffer.concat([info, Buffer.alloc(EXPORT_NAME_PADDING)]));
    this.finish(entry);
  }

  private finish(entry: NbdExportEntry): void {
    this.state = { name: 'done' };
    this.out.done(entry, this.negotiated(entry), this.queue.drain());
  }

  private list(data: Buffer): void {
    if (data.length !== 0) return this.error(OPT.LIST, REP.ERR_INVALID, `option '${optionName(OPT.LIST)}' has unexpected length`);
    for (const entry of this.exports.list()) {
      const name = Buffer.from(entry.name);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(name.length);
      this.reply(OPT.LIST, REP.SERVER, Buffer.concat([len, name, Buffer.from(entry.description)]));
    }
    this.reply(OPT.LIST, REP.ACK);
  }

  /** Reads a 32-bit length and that many bytes as a string, or undefined when the data runs short. */
  private static string(data: Buffer, at: number): { value: string; next: number } | undefined {
    if (at + 4 > data.length) return undefined;
    const len = data.readUInt32BE(at);
    if (len > MAX_STRING || at + 4 + len > data.length) return undefined;
    return { value: data.toString('utf8', at + 4, at + 4 + len), next: at + 4 + len };
  }

  private infoOrGo(option: number, data: Buffer): void {
    const name = Handshake.string(data, 0);
    if (!name || name.next + 2 > data.length) return this.error(option, REP.ERR_INVALID, `Inconsistent lengths in option ${optionName(option)}`);
    const count = data.readUInt16BE(name.next);
    if (name.next + 2 + count * 2 !== data.length) return this.error(option, REP.ERR_INVALID, `Inconsistent lengths in option ${optionName(option)}`);
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(name.next + 2 + i * 2));
    const entry = this.exports.find(name.value);
    if (!entry) return this.error(option, REP.ERR_UNKNOWN, `export '${name.value}' not present`);
    if (option === OPT.GO && !this.exports.canServe(entry, this.tlsActive)) {
      return this.error(option, REP.ERR_PLATFORM, `export '${name.value}' lives in an I/O context this connection cannot move to`);
    }

    if (requested.has(INFO.NAME)) {
      const n = Buffer.from(entry.name);
      const b = Buffer.alloc(2 + n.length);
      b.writeUInt16BE(INFO.NAME, 0);
      n.copy(b, 2);
      this.reply(option, REP.INFO, b);
    }
    if (requested.has(INFO.DESCRIPTION) && entry.description !== '') {
      const d = Buffer.from(entry.description);
      const b = Buffer.alloc(2 + d.length);
      b.writeUInt16BE(INFO.DESCRIPTION, 0);
      d.copy(b, 2);
      this.reply(option, REP.INFO, b);
    }
    // Block sizes are sent whether asked or not; a client that ignores them is still served.
    const sizes = Buffer.alloc(14);
    sizes.writeUInt16BE(INFO.BLOCK_SIZE, 0);
    const min = entry.minBlock;
    sizes.writeUInt32BE(min, 2);
    sizes.writeUInt32BE(Math.max(4096, min), 6);
    sizes.writeUInt32BE(entry.maxTransfer > 0 ? Math.min(entry.maxTransfer, MAX_PAYLOAD) : MAX_PAYLOAD, 10);
    this.reply(option, REP.INFO, sizes);

    const exp = Buffer.alloc(2);
    exp.writeUInt16BE(INFO.EXPORT, 0);
    this.reply(option, REP.INFO, Buffer.concat([exp, this.exportInfo(entry)]));

    if (option === OPT.GO && min > 1 && !requested.has(INFO.BLOCK_SIZE)) {
      return this.error(option, REP.ERR_BLOCK_SIZE_REQD, 'request NBD_INFO_BLOCK_SIZE to use this export');
    }
    this.reply(option, REP.ACK);
    if (option === OPT.GO) this.finish(entry);
  }

  private metaContext(option: number, data: Buffer): void {
    const listing = option === OPT.LIST_META_CONTEXT;
    if (!this.structuredReply) return this.error(option, REP.ERR_INVALID, `request option '${optionName(option)}' when structured reply is not negotiated`);
    const name = Handshake.string(data, 0);
    if (!name || name.next + 4 > data.length) return this.error(option, REP.ERR_INVALID, `Inconsistent lengths in option ${optionName(option)}`);
    const count = data.readUInt32BE(name.next);
    const queries: string[] = [];
    let at = name.next + 4;
    for (let i = 0; i < count; i++) {
      const q = Handshake.string(data, at);
      if (!q) return this.error(option, REP.ERR_INVALID, `Inconsistent lengths in option ${optionName(option)}`);
      queries.push(q.value);
      at = q.next;
    }
    if (at !== data.length) return this.error(option, REP.ERR_INVALID, `Inconsistent lengths in option ${optionName(option)}`);
    const entry = this.exports.find(name.value);
    if (!entry) return this.error(option, REP.ERR_UNKNOWN, `export '${name.value}' not present`);

    const chosen = contextsOf(entry).filter(([ctx]) => (listing && queries.length === 0) || queries.some((q) => matches(q, ctx, listing)));
    if (!listing) {
      this.metaContexts = Object.fromEntries(chosen);
      this.metaExport = entry.name;
    }
    for (const [ctx, id] of chosen) {
      const n = Buffer.from(ctx);
      const b = Buffer.alloc(4 + n.length);
      b.writeUInt32BE(listing ? 0 : id, 0);
      n.copy(b, 4);
      this.reply(option, REP.META_CONTEXT, b);
    }
    this.reply(option, REP.ACK);
  }
}
