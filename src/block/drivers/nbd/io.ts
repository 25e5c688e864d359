/**
 * nbd, I/O half: the node's requests as NBD commands on the connection
 * that lives in this I/O context. Capabilities come from the server's
 * transmission flags: what the server cannot do is emulated (FUA by a
 * flush) or left to the generic layer (zeroing by writing zeros), never
 * sent. Reads past the export's end (its last partial sector) are zeros.
 */
import type { IoDriver } from '../../io/driver-io';
import type { IoNode } from '../../io/io-node';
import { IoError, STATUS, type BlockStatus } from '../../common/io-types';
import { CMD, CMD_FLAG, STATE_HOLE, STATE_ZERO, TFLAG } from '../../../exports/nbd/protocol';
import { NbdClient } from './client';
import { maxTransferOf, type NbdClientState } from './common';
import { takeParked } from './service';

interface NbdIo {
  state: NbdClientState;
  client: NbdClient;
  /** Longest zero and trim requests: the server's maximum (or 32 MiB), and under 2^31 for trim, kept aligned. */
  maxZero: number;
  maxTrim: number;
}

const alignDown = (n: number, a: number): number => n - (n % a);

function has(io: NbdIo, flag: number): boolean {
  return (io.state.info.flags & flag) !== 0;
}

/** Runs `fn` on pieces of at most `max` bytes. */
async function split(offset: number, bytes: number, max: number, fn: (off: number, len: number) => Promise<unknown>): Promise<void> {
  for (let done = 0; done < bytes; done += max) await fn(offset + done, Math.min(max, bytes - done));
}

/** The part of a request inside the export (the node's length is rounded up to whole sectors). */
function insideExport(node: IoNode<NbdIo>, offset: number, bytes: number): number {
  return Math.max(0, Math.min(bytes, node.state.state.info.size - offset));
}

export const nbdIo: IoDriver<NbdIo> = {
  name: 'nbd',

  attach(desc) {
    const state = desc.state as NbdClientState;
    const align = Math.max(1, desc.requestAlignment);
    return {
      state,
      client: new NbdClient(state.connect, state.info, state.reconnectDelay, desc.nodeName, takeParked(state.token)),
      maxZero: alignDown(maxTransferOf(state.info), align),
      maxTrim: alignDown(0x7fffffff, align),
    };
  },

  async detach(node) {
    await node.state.client.close();
  },

  async read(node, offset, buf) {
    const inside = insideExport(node, offset, buf.length);
    if (inside < buf.length) buf.fill(0, inside);
    if (inside === 0) return;
    await node.state.client.request(CMD.READ, 0, offset, inside, undefined, inside === buf.length ? buf : buf.subarray(0, inside));
  },

  async write(node, offset, buf, flags) {
    const io = node.state;
    if (insideExport(node, offset, buf.length) < buf.length) throw new IoError('ENOSPC', 'write beyond the end of the NBD export');
    const fua = flags.fua === true && has(io, TFLAG.SEND_FUA);
    await io.client.request(CMD.WRITE, fua ? CMD_FLAG.FUA : 0, offset, buf.length, buf);
    if (flags.fua && !fua && has(io, TFLAG.SEND_FLUSH)) await io.client.request(CMD.FLUSH, 0, 0, 0);
  },

  async writeZeroes(node, offset, bytes, flags) {
    const io = node.state;
    if (!has(io, TFLAG.SEND_WRITE_ZEROES)) throw new IoError('ENOTSUP', 'the NBD server cannot write zeroes');
    if (flags.noFallback && !has(io, TFLAG.SEND_FAST_ZERO)) throw new IoError('ENOTSUP', 'the NBD server cannot zero quickly');
    const inside = insideExport(node, offset, bytes);
    const fua = flags.fua === true && has(io, TFLAG.SEND_FUA);
    let cmdFlags = fua ? CMD_FLAG.FUA : 0;
    // Without leave to unmap, the server must keep the range allocated.
    if (!flags.mayUnmap) cmdFlags |= CMD_FLAG.NO_HOLE;
    if (flags.noFallback) cmdFlags |= CMD_FLAG.FAST_ZERO;
    await split(offset, inside, io.maxZero, (off, len) => io.client.request(CMD.WRITE_ZEROES, cmdFlags, off, len));
    if (flags.fua && !fua && has(io, TFLAG.SEND_FLUSH)) await io.client.request(CMD.FLUSH, 0, 0, 0);
  },

  async discard(node, offset, bytes) {
    const io = node.state;
    if (!has(io, TFLAG.SEND_TRIM)) return;
    await split(offset, insideExport(node, offset, bytes), io.maxTrim, (off, len) => io.client.request(CMD.TRIM, 0, off, len));
  },

  async flush(node) {
    const io = node.state;
    if (node.readOnly || !has(io, TFLAG.SEND_FLUSH)) return;
    await io.client.request(CMD.FLUSH, 0, 0, 0);
  },

  async blockStatus(node, offset, bytes): Promise<BlockStatus> {
    const io = node.state;
    const where = { map: offset, file: node.name, depth: 1 };
    const inside = insideExport(node, offset, bytes);
    if (inside === 0) return { status: STATUS.ZERO | STATUS.ALLOCATED | STATUS.OFFSET_VALID, bytes, ...where };
    if (io.state.info.metaContextId === undefined) {
      return { status: STATUS.DATA | STATUS.ALLOCATED | STATUS.OFFSET_VALID, bytes, ...where };
    }
    const ask = Math.min(inside, io.maxTrim);
    const extent = await io.client.request(CMD.BLOCK_STATUS, CMD_FLAG.REQ_ONE, offset, ask);
    if (!extent || extent.length === 0) throw new IoError('EIO', 'the NBD server sent an empty block status extent');
    let status = STATUS.ALLOCATED | STATUS.OFFSET_VALID;
    if (!(extent.flags & STATE_HOLE)) status |= STATUS.DATA;
    if (extent.flags & STATE_ZERO) status |= STATUS.ZERO;
    return { status, bytes: Math.min(extent.length, ask), ...where };
  },

  async truncate(node, length, exact) {
    // NBD exports have a fixed size: only a "resize" to what there is, or a shrink QEMU tolerates when not exact, succeeds.
    if (length > node.length) throw new IoError('ENOTSUP', 'Cannot grow NBD nodes');
    if (length < node.length && exact) throw new IoError('ENOTSUP', 'Cannot resize NBD nodes');
    return node.length;
  },
};
