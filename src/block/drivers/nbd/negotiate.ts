/**
 * The client side of NBD negotiation (fixed newstyle, `doc/proto.md`):
 * structured replies, one meta context for block status, then NBD_OPT_GO
 * with NBD_INFO_BLOCK_SIZE; servers without NBD_OPT_GO get NBD_OPT_EXPORT_NAME.
 * With TLS credentials, NBD_OPT_STARTTLS comes first and the rest happens
 * inside the TLS session.
 * Errors are worded as QEMU's NBD client words them.
 */
import type * as net from 'node:net';
import { IoError } from '../../common/io-types';
import * as P from '../../../exports/nbd/protocol';
import type { NbdConnectOptions, NbdExportInfo } from './common';
import { SocketReader } from './socket-reader';
import { startTls } from './starttls';

const OLDSTYLE_MAGIC = 0x00420281861253n;

/** QEMU's names of options, used in its error messages. */
const OPTION_NAMES: Record<number, string> = {
  [P.OPT.EXPORT_NAME]: 'export name',
  [P.OPT.ABORT]: 'abort',
  [P.OPT.LIST]: 'list',
  [P.OPT.STARTTLS]: 'starttls',
  [P.OPT.INFO]: 'info',
  [P.OPT.GO]: 'go',
  [P.OPT.STRUCTURED_REPLY]: 'structured reply',
  [P.OPT.LIST_META_CONTEXT]: 'list meta context',
  [P.OPT.SET_META_CONTEXT]: 'set meta context',
};

/** A negotiation failure the user sees as is (QEMU's error text). */
export class NegotiationError extends IoError {
  constructor(message: string, code = 'EINVAL') {
    super(code, message);
  }
}

/** Reads `n` bytes of the handshake; a short read says what was being read, as QEMU does. */
async function readField(reader: SocketReader, n: number, what: string): Promise<Buffer> {
  try {
    return await reader.read(n);
  } catch (err) {
    throw new NegotiationError(`Failed to read ${what}: ${(err as Error).message}`, (err as IoError).code ?? 'EIO');
  }
}

function optionLabel(opt: number): string {
  return `option ${opt} (${OPTION_NAMES[opt] ?? '<unknown>'})`;
}

/** The error for an option reply of an error type (bit 31 set); ERR_UNSUP is handled by callers. */
function replyError(type: number, opt: number): NegotiationError {
  switch (type) {
    case P.REP.ERR_POLICY:
      return new NegotiationError(`Denied by server for ${optionLabel(opt)}`, 'EPERM');
    case P.REP.ERR_INVALID:
      return new NegotiationError(`Invalid parameters for ${optionLabel(opt)}`);
    case P.REP.ERR_PLATFORM:
      return new NegotiationError(`Server lacks support for ${optionLabel(opt)}`);
    case P.REP.ERR_TLS_REQD:
      return new NegotiationError(`TLS negotiation required before ${optionLabel(opt)}`);
    case P.REP.ERR_UNKNOWN:
      return new NegotiationError('Requested export not available', 'ENOENT');
    case P.REP.ERR_SHUTDOWN:
      return new NegotiationError(`Server shutting down before ${optionLabel(opt)}`, 'ESHUTDOWN');
    case P.REP.ERR_BLOCK_SIZE_REQD:
      return new NegotiationError(`Server requires INFO_BLOCK_SIZE for ${optionLabel(opt)}`);
    default:
      return new NegotiationError(`Unknown error code when asking for ${optionLabel(opt)}`);
  }
}

interface OptionReply {
  type: number;
  data: Buffer;
}

class Negotiator {
  constructor(
    private readonly socket: net.Socket,
    private readonly reader: SocketReader,
  ) {}

  sendOption(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const head = Buffer.alloc(16);
    head.writeBigUInt64BE(P.IHAVEOPT, 0);
    head.writeUInt32BE(opt, 8);
    head.writeUInt32BE(data.length, 12);
    this.socket.write(data.length > 0 ? Buffer.concat([head, data]) : head);
  }

  async readReply(opt: number): Promise<OptionReply> {
    const head = await readField(this.reader, 20, 'option reply');
    if (head.readBigUInt64BE(0) !== P.OPTION_REPLY_MAGIC) throw new NegotiationError('Unexpected option reply magic');
    const gotOpt = head.readUInt32BE(8);
    if (gotOpt !== opt) throw new NegotiationError(`Unexpected option type ${gotOpt} (${OPTION_NAMES[gotOpt] ?? '<unknown>'}), expected ${optionLabel(opt)}`);
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > P.MAX_OPTION_LENGTH * 16) throw new NegotiationError(`server's reply to ${optionLabel(opt)} is too long`);
    const data = length > 0 ? await readField(this.reader, length, 'option reply data') : Buffer.alloc(0);
    return { type, data };
  }

  /**
   * An option answered by a lone ACK; false when the server does not support
   * it. Unless `strict`, any error means "not supported", as in QEMU (a
   * server that wants TLS first refuses structured replies with ERR_TLS_REQD).
   */
  async simpleOption(opt: number, strict: boolean): Promise<boolean> {
    this.sendOption(opt);
    const reply = await this.readReply(opt);
    if (reply.type === P.REP.ACK) return true;
    if (reply.type === P.REP.ERR_UNSUP) return false;
    if (reply.type & 0x80000000) {
      if (!strict) return false;
      throw replyError(reply.type, opt);
    }
    throw new NegotiationError(`Unexpected reply type ${reply.type} to ${optionLabel(opt)}`);
  }

  /** SET_META_CONTEXT for one context; its id, or undefined when the server has no such context. */
  async setMetaContext(exportName: string, context: string): Promise<number | undefined> {
    const name = Buffer.from(exportName, 'utf8');
    const ctx = Buffer.from(context, 'utf8');
    const data = Buffer.alloc(4 + name.length + 4 + 4 + ctx.length);
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt32BE(1, at);
    at = data.writeUInt32BE(ctx.length, at);
    ctx.copy(data, at);
    this.sendOption(P.OPT.SET_META_CONTEXT, data);
    let id: number | undefined;
    for (;;) {
      const reply = await this.readReply(P.OPT.SET_META_CONTEXT);
      if (reply.type === P.REP.ACK) return id;
      if (reply.type === P.REP.ERR_UNSUP) return undefined;
      if (reply.type & 0x80000000) throw replyError(reply.type, P.OPT.SET_META_CONTEXT);
      if (reply.type !== P.REP.META_CONTEXT || reply.data.length < 4) throw new NegotiationError('Unexpected reply to set meta context');
      const got = reply.data.subarray(4).toString('utf8');
      if (got !== context || id !== undefined) throw new NegotiationError(`Server replied with unexpected meta context '${got}'`);
      id = reply.data.readUInt32BE(0);
    }
  }

  /** NBD_OPT_GO; undefined when the server does not know the option. */
  async go(exportName: string): Promise<Pick<NbdExportInfo, 'size' | 'flags' | 'minBlock' | 'preferredBlock' | 'maxBlock'> | undefined> {
    const name = Buffer.from(exportName, 'utf8');
    const data = Buffer.alloc(4 + name.length + 2 + 2);
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt16BE(1, at);
    data.writeUInt16BE(P.INFO.BLOCK_SIZE, at);
    this.sendOption(P.OPT.GO, data);
    let size: number | undefined;
    let flags = 0;
    let minBlock = 0;
    let preferredBlock = 0;
    let maxBlock = 0;
    for (;;) {
      const reply = await this.readReply(P.OPT.GO);
      if (reply.type === P.REP.ERR_UNSUP) return undefined;
      if (reply.type & 0x80000000) throw replyError(reply.type, P.OPT.GO);
      if (reply.type === P.REP.ACK) {
        if (size === undefined) throw new NegotiationError('broken server omitted NBD_INFO_EXPORT');
        return { size, flags, minBlock, preferredBlock, maxBlock };
      }
      if (reply.type !== P.REP.INFO || reply.data.length < 2) throw new NegotiationError(`Unexpected reply type ${reply.type} to ${optionLabel(P.OPT.GO)}`);
      const info = reply.data.readUInt16BE(0);
      if (info === P.INFO.EXPORT) {
        if (reply.data.length !== 12) throw new NegotiationError('Invalid length for NBD_INFO_EXPORT');
        size = exportSize(reply.data.readBigUInt64BE(2));
        flags = reply.data.readUInt16BE(10);
      } else if (info === P.INFO.BLOCK_SIZE) {
        if (reply.data.length !== 14) throw new NegotiationError('Invalid length for NBD_INFO_BLOCK_SIZE');
        minBlock = reply.data.readUInt32BE(2);
        preferredBlock = reply.data.readUInt32BE(6);
        maxBlock = reply.data.readUInt32BE(10);
        checkBlockSizes(minBlock, preferredBlock, maxBlock);
      }
      // Other info types (name, description) are not needed.
    }
  }
}

function exportSize(size: bigint): number {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NegotiationError(`export size ${size} is too large`);
  return Number(size);
}

const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

function checkBlockSizes(min: number, preferred: number, max: number): void {
  if (!isPowerOfTwo(min) || min > 64 * 1024) throw new NegotiationError(`server minimum block size ${min} is not a power of two`);
  if (!isPowerOfTwo(preferred) || preferred < min) throw new NegotiationError(`server preferred block size ${preferred} is not valid`);
  if (max < Math.min(preferred, P.MAX_PAYLOAD) || max % min !== 0) throw new NegotiationError(`server maximum block size ${max} is not valid`);
}

/**
 * Negotiates on a connected socket. Resolves with what the server told of
 * the export, the bytes already read past the handshake, and the socket
 * transmission goes on: the TLS session's when there is one.
 */
export async function negotiate(plain: net.Socket, options: NbdConnectOptions): Promise<{ info: NbdExportInfo; leftover: Buffer; socket: net.Socket }> {
  let socket = plain;
  let reader = new SocketReader(socket);
  try {
    const initial = (await readField(reader, 8, 'initial magic')).readBigUInt64BE(0);
    if (initial !== P.NBDMAGIC) throw new NegotiationError(`Bad initial magic received: 0x${initial.toString(16)}`);
    const style = (await readField(reader, 8, 'server magic')).readBigUInt64BE(0);
    if (style === OLDSTYLE_MAGIC) {
      if (options.tls) throw new NegotiationError('Server does not support STARTTLS');
      if (options.exportName !== '') throw new NegotiationError('Server does not support non-empty export names');
      const rest = await readField(reader, 8 + 4 + 124, 'export length');
      const info: NbdExportInfo = { size: exportSize(rest.readBigUInt64BE(0)), flags: rest.readUInt32BE(8) & 0xffff, minBlock: 0, preferredBlock: 0, maxBlock: 0, structuredReplies: false };
      return { info, leftover: reader.release(), socket };
    }
    if (style !== P.IHAVEOPT) throw new NegotiationError(`Bad server magic received: 0x${style.toString(16)}`);
    const serverFlags = (await readField(reader, 2, 'server flags')).readUInt16BE(0);
    const fixed = (serverFlags & P.FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (serverFlags & P.FLAG_NO_ZEROES) !== 0;
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE((fixed ? P.FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? P.FLAG_C_NO_ZEROES : 0));
    socket.write(clientFlags);
    let n = new Negotiator(socket, reader);

    if (options.tls) {
      if (!fixed) throw new NegotiationError('Server does not support STARTTLS');
      if (!(await n.simpleOption(P.OPT.STARTTLS, true))) throw new NegotiationError("Server don't support STARTTLS option");
      reader.release();
      ({ socket, reader } = await startTls(socket, options.tls));
      n = new Negotiator(socket, reader);
    }

    let structuredReplies = false;
    let metaContextId: number | undefined;
    if (fixed) {
      structuredReplies = await n.simpleOption(P.OPT.STRUCTURED_REPLY, false);
      if (structuredReplies) metaContextId = await n.setMetaContext(options.exportName, options.metaContext);
      if (options.metaContextRequired && metaContextId === undefined) throw new NegotiationError('Could not open image: Invalid argument');
      const went = await n.go(options.exportName);
      if (went) return { info: { ...went, structuredReplies, metaContextId }, leftover: reader.release(), socket };
    }
    // No NBD_OPT_GO: the old way, which cannot report errors.
    n.sendOption(P.OPT.EXPORT_NAME, Buffer.from(options.exportName, 'utf8'));
    const reply = await readField(reader, 10 + (noZeroes ? 0 : 124), 'export length');
    const info: NbdExportInfo = {
      size: exportSize(reply.readBigUInt64BE(0)),
      flags: reply.readUInt16BE(8),
      minBlock: 0,
      preferredBlock: 0,
      maxBlock: 0,
      structuredReplies,
      metaContextId,
    };
    return { info, leftover: reader.release(), socket };
  } catch (err) {
    reader.release();
    // The TLS session is this function's own; the plain socket is the caller's.
    if (socket !== plain) socket.destroy();
    throw err;
  }
}
