/**
 * One vhost-user front-end connected to a vhost-user-blk export, served in
 * the node's I/O context: the control messages (features, memory table,
 * rings, notifiers, config space) read from the UNIX socket with the
 * descriptors they carry, and the requests its queues' kicks announce.
 * Control messages are handled one at a time, in order. A front-end that
 * breaks the protocol or its rings is disconnected; the export keeps
 * listening.
 */
import { constants } from 'node:os';
import { log } from '../../../common/log';
import { readFd, watchFd, writeFd, type FdWatch } from '../../../native/fd-watch';
import { recvWithFds, sendWithFds, setNonBlocking } from '../../../native/vhost-user';
import * as P from '../protocol';
import { serveBlkRequest, type BlkDevice } from './blk-request';
import { closeFds, closeQuietly, GuestMemory, readRegion, u64 } from './guest-memory';
import { SplitQueue, VirtqueueError, type Chain } from './virtqueue';

const { EAGAIN } = constants.errno;
const READ_CHUNK = 65536;
/** What may wait unhandled: far more than a front-end sends before it needs an answer. */
const MAX_PENDING_BYTES = 1024 * 1024;
const MAX_PENDING_FDS = 256;

/** The device features offered, as the reference offers them (less dirty logging for migration). */
const DEVICE_FEATURES = [P.F.BLK_SIZE_MAX, P.F.BLK_SEG_MAX, P.F.BLK_BLK_SIZE, P.F.BLK_FLUSH, P.F.BLK_TOPOLOGY, P.F.BLK_CONFIG_WCE, P.F.BLK_MQ, P.F.BLK_DISCARD, P.F.BLK_WRITE_ZEROES, P.F.RING_INDIRECT_DESC, P.F.RING_EVENT_IDX, P.F.PROTOCOL_FEATURES, P.F.VERSION_1].reduce((m, b) => m | P.bit(b), 0n);
const PROTOCOL_FEATURES = [P.PROTOCOL_F.MQ, P.PROTOCOL_F.REPLY_ACK, P.PROTOCOL_F.CONFIG, P.PROTOCOL_F.CONFIGURE_MEM_SLOTS].reduce((m, b) => m | P.bit(b), 0n);
/** What the reference puts in the config space besides sizes. */
const SEG_MAX = 126;
const MAX_DISCARD_SECTORS = 32768;

class ProtocolError extends Error {}

function protocolError(why: string): never {
  throw new ProtocolError(why);
}

interface Message {
  request: number;
  flags: number;
  payload: Buffer;
  fds: number[];
}

export interface ConnectionOptions extends BlkDevice {
  /** The export's id, for logs. */
  id: string;
  numQueues: number;
}

export class VhostUserConnection {
  private readonly watch: FdWatch;
  private input = Buffer.alloc(0);
  /** Bytes of the stream consumed before `input`. */
  private consumed = 0;
  /** Descriptors received, with the stream position of the end of the read that brought them. */
  private fdMarks: Array<{ end: number; fds: number[] }> = [];
  /** Set while a control message is being handled: the next waits. */
  private busy = false;
  private closed = false;
  private readonly memory = new GuestMemory();
  private readonly queues: SplitQueue[];
  private readonly kickWatches = new Map<number, FdWatch>();
  private features = 0n;
  private protocolFeatures = 0n;
  /** The config space's cache mode byte: the reference starts at 0 whatever the export's cache mode. */
  private writeback = 0;
  /** What requests go to; the guest may turn the write cache on or off. */
  private readonly device: BlkDevice;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private notifyPending = new Set<SplitQueue>();
  private notifyScheduled = false;
  private readonly gone: Promise<void>;
  private resolveGone!: () => void;

  constructor(
    private readonly fd: number,
    private readonly opts: ConnectionOptions,
  ) {
    this.device = { backend: opts.backend, writable: opts.writable, writethrough: opts.writethrough, logicalBlockSize: opts.logicalBlockSize };
    this.queues = Array.from({ length: opts.numQueues }, (_, i) => new SplitQueue(i));
    this.gone = new Promise((resolve) => (this.resolveGone = resolve));
    this.watch = watchFd(fd, false, () => this.readable());
  }

  /** Resolves once the connection is closed and its requests have finished. */
  whenGone(): Promise<void> {
    return this.gone;
  }

  private offered(): bigint {
    return DEVICE_FEATURES | (this.opts.writable ? 0n : P.bit(P.F.BLK_RO));
  }

  private has(feature: number): boolean {
    return (this.features & P.bit(feature)) !== 0n;
  }

  private hasProtocol(feature: number): boolean {
    return (this.protocolFeatures & P.bit(feature)) !== 0n;
  }

  // ---- reading messages -------------------------------------------------------

  private readable(): void {
    if (this.closed) return;
    const chunk = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const got = recvWithFds(this.fd, chunk);
      if (got.bytes === -EAGAIN) break;
      if (got.bytes <= 0) {
        closeFds(got.fds);
        if (got.bytes < 0) log.warn({ export: this.opts.id, errno: -got.bytes }, 'vhost-user connection failed');
        void this.close();
        return;
      }
      this.input = this.input.length === 0 ? Buffer.from(chunk.subarray(0, got.bytes)) : Buffer.concat([this.input, chunk.subarray(0, got.bytes)]);
      if (got.fds.length > 0) this.fdMarks.push({ end: this.consumed + this.input.length, fds: got.fds });
      this.dispatch();
      if (this.closed) return;
      // Messages wait while one is handled; a front-end piling up more than any real one would is cut off.
      if (this.input.length > MAX_PENDING_BYTES || this.fdMarks.length > MAX_PENDING_FDS) {
        this.fail(new ProtocolError('too many messages waiting'));
        return;
      }
    }
  }

  /** Handles the complete messages buffered, in order, one at a time. */
  private dispatch(): void {
    while (!this.busy && !this.closed) {
      const msg = this.nextMessage();
      if (!msg) return;
      let result: Promise<void> | void;
      try {
        result = this.handle(msg);
      } catch (err) {
        this.fail(err);
        return;
      }
      if (result) {
        this.busy = true;
        result.then(
          () => {
            this.busy = false;
            this.dispatch();
          },
          (err: unknown) => this.fail(err),
        );
      }
    }
  }

  private nextMessage(): Message | undefined {
    if (this.input.length < P.HEADER_SIZE) return undefined;
    const request = this.input.readUInt32LE(0);
    const flags = this.input.readUInt32LE(4);
    const size = this.input.readUInt32LE(8);
    if ((flags & P.FLAG_VERSION_MASK) !== P.FLAG_VERSION || size > P.MAX_PAYLOAD) {
      this.fail(new ProtocolError(`bad message header (request ${request}, flags ${flags}, size ${size})`));
      return undefined;
    }
    const total = P.HEADER_SIZE + size;
    if (this.input.length < total) return undefined;
    const payload = this.input.subarray(P.HEADER_SIZE, total);
    this.input = this.input.subarray(total);
    this.consumed += total;
    // A message's descriptors arrive with its bytes: with the read that brought its last byte at the latest.
    const fds: number[] = [];
    while (this.fdMarks.length > 0 && this.fdMarks[0].end <= this.consumed) fds.push(...this.fdMarks.shift()!.fds);
    return { request, flags, payload, fds };
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    const why = err instanceof Error ? err.message : String(err);
    log.warn({ export: this.opts.id, err: why }, 'vhost-user front-end disconnected');
    void this.close();
  }

  // ---- replies ----------------------------------------------------------------

  private reply(request: number, payload: Buffer): void {
    const msg = Buffer.alloc(P.HEADER_SIZE + payload.length);
    msg.writeUInt32LE(request, 0);
    msg.writeUInt32LE(P.FLAG_VERSION | P.FLAG_REPLY, 4);
    msg.writeUInt32LE(payload.length, 8);
    payload.copy(msg, P.HEADER_SIZE);
    const n = sendWithFds(this.fd, msg);
    if (n !== msg.length) protocolError(`reply not sent (${n})`);
  }

  private replyU64(request: number, value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    this.reply(request, b);
  }

  // ---- control messages -------------------------------------------------------

  private handle(msg: Message): Promise<void> | void {
    const { request, payload } = msg;
    const fdsTaken = this.takesFds(msg);
    if (!fdsTaken) closeFds(msg.fds);
    const ack = (ok: boolean): void => {
      if ((msg.flags & P.FLAG_NEED_REPLY) !== 0 && this.hasProtocol(P.PROTOCOL_F.REPLY_ACK)) this.replyU64(request, ok ? 0n : 1n);
    };
    switch (request) {
      case P.REQ.GET_FEATURES:
        return this.replyU64(request, this.offered());
      case P.REQ.SET_FEATURES:
        this.features = this.u64Arg(payload) & this.offered();
        // Without protocol features, a ring is enabled as soon as it starts.
        if (!this.has(P.F.PROTOCOL_FEATURES)) for (const q of this.queues) q.enabled = true;
        return ack(true);
      case P.REQ.GET_PROTOCOL_FEATURES:
        return this.replyU64(request, PROTOCOL_FEATURES);
      case P.REQ.SET_PROTOCOL_FEATURES:
        this.protocolFeatures = this.u64Arg(payload) & PROTOCOL_FEATURES;
        return ack(true);
      case P.REQ.SET_OWNER:
        return ack(true);
      case P.REQ.RESET_OWNER:
      case P.REQ.RESET_DEVICE:
        return this.resetDevice().then(() => ack(true));
      case P.REQ.GET_QUEUE_NUM:
        return this.replyU64(request, BigInt(this.opts.numQueues));
      case P.REQ.GET_MAX_MEM_SLOTS:
        return this.replyU64(request, BigInt(P.MAX_MEM_SLOTS));
      case P.REQ.SET_MEM_TABLE:
        return this.setMemTable(msg).then(() => ack(true));
      case P.REQ.ADD_MEM_REG:
        return this.addMemRegion(msg).then(() => ack(true));
      case P.REQ.REM_MEM_REG:
        return ack(this.removeMemRegion(payload));
      case P.REQ.SET_VRING_NUM: {
        const { q, num } = this.vringState(payload);
        if (num === 0 || num > P.MAX_QUEUE_SIZE || (num & (num - 1)) !== 0) protocolError(`bad queue size ${num}`);
        q.size = num;
        // The rings' extent depends on the size: found again (or lost, until new addresses come).
        q.translate(this.memory);
        return ack(true);
      }
      case P.REQ.SET_VRING_ADDR:
        this.setVringAddr(payload);
        return ack(true);
      case P.REQ.SET_VRING_BASE: {
        const { q, num } = this.vringState(payload);
        q.setBase(num);
        return ack(true);
      }
      case P.REQ.GET_VRING_BASE:
        return this.getVringBase(payload);
      case P.REQ.SET_VRING_KICK:
      case P.REQ.SET_VRING_CALL:
      case P.REQ.SET_VRING_ERR:
        this.setVringFd(request, payload, msg.fds);
        return ack(true);
      case P.REQ.SET_VRING_ENABLE: {
        const { q, num } = this.vringState(payload);
        q.enabled = num !== 0;
        this.process(q);
        return ack(true);
      }
      case P.REQ.GET_CONFIG:
        return this.getConfig(payload);
      case P.REQ.SET_CONFIG:
        this.setConfig(payload);
        return ack(true);
      default:
        // As in the reference: a request it does not handle ends the connection.
        protocolError(`request ${request} not supported`);
    }
  }

  /** Whether the message's handler keeps (or closes) its descriptors itself. */
  private takesFds(msg: Message): boolean {
    switch (msg.request) {
      case P.REQ.SET_MEM_TABLE:
      case P.REQ.ADD_MEM_REG:
        return true;
      case P.REQ.SET_VRING_KICK:
      case P.REQ.SET_VRING_CALL:
      case P.REQ.SET_VRING_ERR:
        return msg.payload.length >= 8 && (msg.payload.readUInt32LE(0) & P.VRING_NOFD_MASK) === 0;
      default:
        return false;
    }
  }

  private u64Arg(payload: Buffer): bigint {
    if (payload.length < 8) protocolError('payload too short');
    return payload.readBigUInt64LE(0);
  }

  private queue(index: number): SplitQueue {
    return this.queues[index] ?? protocolError(`no queue ${index}`);
  }

  private vringState(payload: Buffer): { q: SplitQueue; num: number } {
    if (payload.length < 8) protocolError('payload too short');
    return { q: this.queue(payload.readUInt32LE(0)), num: payload.readUInt32LE(4) };
  }

  private setVringAddr(payload: Buffer): void {
    if (payload.length < 40) protocolError('payload too short');
    const q = this.queue(payload.readUInt32LE(0));
    if (!q.setAddresses({ desc: u64(payload, 8), used: u64(payload, 16), avail: u64(payload, 24) }, this.memory)) protocolError(`queue ${q.index}: rings outside guest memory`);
    // Rings set up after their kick: requests made meanwhile are waiting.
    this.process(q);
  }

  private setVringFd(request: number, payload: Buffer, fds: number[]): void {
    const arg = this.u64Arg(payload);
    const q = this.queue(Number(arg & BigInt(P.VRING_INDEX_MASK)));
    const noFd = (arg & BigInt(P.VRING_NOFD_MASK)) !== 0n;
    if (!noFd && fds.length !== 1) {
      closeFds(fds);
      protocolError('notifier without exactly one descriptor');
    }
    const fd = noFd ? undefined : fds[0];
    // A blocking notifier would let a front-end that never drains its call eventfd stall this thread on a write.
    if (fd !== undefined) {
      try {
        setNonBlocking(fd);
      } catch (err) {
        closeQuietly(fd);
        throw err;
      }
    }
    if (request === P.REQ.SET_VRING_KICK) {
      this.setKick(q, fd);
      q.started = true;
      if (!this.has(P.F.PROTOCOL_FEATURES)) q.enabled = true;
      this.process(q);
    } else if (request === P.REQ.SET_VRING_CALL) {
      if (q.callFd !== undefined) closeQuietly(q.callFd);
      q.callFd = fd;
    } else {
      if (q.errFd !== undefined) closeQuietly(q.errFd);
      q.errFd = fd;
    }
  }

  private setKick(q: SplitQueue, fd: number | undefined): void {
    this.kickWatches.get(q.index)?.close();
    this.kickWatches.delete(q.index);
    if (q.kickFd !== undefined) closeQuietly(q.kickFd);
    q.kickFd = fd;
    if (fd === undefined) return;
    const eight = Buffer.alloc(8);
    this.kickWatches.set(
      q.index,
      watchFd(fd, false, () => {
        readFd(fd, eight);
        this.process(q);
      }),
    );
  }

  private async getVringBase(payload: Buffer): Promise<void> {
    const { q } = this.vringState(payload);
    // Nothing may land on the ring once the front-end has taken it back.
    q.started = false;
    await this.waitFor(() => q.inFlight === 0);
    this.setKick(q, undefined);
    if (q.callFd !== undefined) closeQuietly(q.callFd);
    q.callFd = undefined;
    const state = Buffer.alloc(8);
    state.writeUInt32LE(q.index, 0);
    state.writeUInt32LE(q.stop(), 4);
    this.reply(P.REQ.GET_VRING_BASE, state);
  }

  private async resetDevice(): Promise<void> {
    for (const q of this.queues) q.started = false;
    await this.waitFor(() => this.inFlight === 0);
    for (const q of this.queues) {
      this.setKick(q, undefined);
      q.stop();
      q.enabled = false;
    }
    this.features = 0n;
  }

  private async setMemTable(msg: Message): Promise<void> {
    const { payload, fds } = msg;
    try {
      if (payload.length < 8) protocolError('payload too short');
      const n = payload.readUInt32LE(0);
      if (n > P.MAX_MEM_REGIONS || payload.length < 8 + n * P.MEM_REGION_SIZE || fds.length !== n) protocolError(`bad memory table (${n} regions, ${fds.length} descriptors)`);
      this.memory.clear(this.inFlight > 0);
      for (let i = 0; i < n; i++) this.memory.add(readRegion(payload, 8 + i * P.MEM_REGION_SIZE), fds[i]);
    } finally {
      // The mappings hold the memory: the descriptors are no longer needed.
      closeFds(fds);
    }
    for (const q of this.queues) q.translate(this.memory);
  }

  private async addMemRegion(msg: Message): Promise<void> {
    const { payload, fds } = msg;
    try {
      if (payload.length < 8 + P.MEM_REGION_SIZE || fds.length !== 1) protocolError('bad memory region message');
      if (this.memory.count >= P.MAX_MEM_SLOTS) protocolError('no free memory slot');
      this.memory.add(readRegion(payload, 8), fds[0]);
    } finally {
      closeFds(fds);
    }
    for (const q of this.queues) q.translate(this.memory);
  }

  private removeMemRegion(payload: Buffer): boolean {
    if (payload.length < 8 + P.MEM_REGION_SIZE) protocolError('bad memory region message');
    const removed = this.memory.remove(readRegion(payload, 8), this.inFlight > 0);
    for (const q of this.queues) q.translate(this.memory);
    return removed;
  }

  private configSpace(): Buffer {
    const c = Buffer.alloc(P.CONFIG.SIZE);
    const lbs = this.opts.logicalBlockSize;
    c.writeBigUInt64LE(BigInt(Math.floor(this.opts.backend.length / P.SECTOR)), P.CONFIG.CAPACITY);
    c.writeUInt32LE(SEG_MAX, P.CONFIG.SEG_MAX);
    c.writeUInt32LE(lbs, P.CONFIG.BLK_SIZE);
    c.writeUInt16LE(1, P.CONFIG.MIN_IO_SIZE);
    c.writeUInt32LE(1, P.CONFIG.OPT_IO_SIZE);
    c.writeUInt8(this.writeback, P.CONFIG.WRITEBACK);
    c.writeUInt16LE(this.opts.numQueues, P.CONFIG.NUM_QUEUES);
    c.writeUInt32LE(MAX_DISCARD_SECTORS, P.CONFIG.MAX_DISCARD_SECTORS);
    c.writeUInt32LE(1, P.CONFIG.MAX_DISCARD_SEG);
    c.writeUInt32LE(lbs / P.SECTOR, P.CONFIG.DISCARD_SECTOR_ALIGNMENT);
    c.writeUInt32LE(MAX_DISCARD_SECTORS, P.CONFIG.MAX_WRITE_ZEROES_SECTORS);
    c.writeUInt32LE(1, P.CONFIG.MAX_WRITE_ZEROES_SEG);
    return c;
  }

  private getConfig(payload: Buffer): void {
    if (payload.length < 12) protocolError('payload too short');
    const size = payload.readUInt32LE(4);
    const space = this.configSpace();
    // As the reference does, a request past the config space gets an empty reply, which the front-end takes as failure.
    if (size > space.length) return this.reply(P.REQ.GET_CONFIG, Buffer.alloc(0));
    // The reference answers from the start of the space whatever the offset asked (front-ends ask for offset 0).
    const out = Buffer.alloc(12 + size);
    payload.copy(out, 0, 0, 12);
    space.copy(out, 12, 0, size);
    this.reply(P.REQ.GET_CONFIG, out);
  }

  /**
   * Only the cache mode byte may be written, and it turns the write cache
   * on or off as in the reference; anything else ends the connection, as
   * there.
   */
  private setConfig(payload: Buffer): void {
    if (payload.length < 13) protocolError('payload too short');
    const offset = payload.readUInt32LE(0);
    const size = payload.readUInt32LE(4);
    if (offset !== P.CONFIG.WRITEBACK || size !== 1) protocolError('config space write outside the cache mode');
    this.writeback = payload[12] ? 1 : 0;
    this.device.writethrough = this.writeback === 0;
  }

  // ---- requests -----------------------------------------------------------------

  /** Takes every request the guest has made available on `q`. */
  private process(q: SplitQueue): void {
    if (this.closed || !q.ready) return;
    const indirect = this.has(P.F.RING_INDIRECT_DESC);
    const eventIdx = this.has(P.F.RING_EVENT_IDX);
    try {
      for (;;) {
        for (let chain = q.pop(this.memory, indirect, eventIdx); chain; chain = q.pop(this.memory, indirect, eventIdx)) this.start(q, chain);
        // With EVENT_IDX the guest kicks only past the index we publish: look again once it is published.
        if (!eventIdx || !q.armKick()) break;
      }
    } catch (err) {
      // Whatever the guest put in its rings, it ends this connection only.
      this.fail(new Error(`queue ${q.index}: ${err instanceof VirtqueueError ? err.message : String(err)}`));
    }
  }

  private start(q: SplitQueue, chain: Chain): void {
    this.inFlight++;
    void serveBlkRequest(this.device, chain.readable, chain.writable)
      .catch(() => undefined)
      .then((len) => {
        try {
          q.push(chain.head, len ?? 0);
          this.scheduleNotify(q);
        } catch (err) {
          this.fail(err);
        } finally {
          this.inFlight--;
          if (this.inFlight === 0) this.memory.idle();
          for (const w of this.idleWaiters.splice(0)) w();
        }
      });
  }

  /** Interrupts are sent once per turn of the event loop, for every completion of that turn. */
  private scheduleNotify(q: SplitQueue): void {
    this.notifyPending.add(q);
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      const eventIdx = this.has(P.F.RING_EVENT_IDX);
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      try {
        for (const pending of this.notifyPending) {
          if (pending.callFd !== undefined && pending.shouldNotify(eventIdx)) writeFd(pending.callFd, one);
        }
      } catch (err) {
        this.fail(err);
      }
      this.notifyPending.clear();
    });
  }

  private async waitFor(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- closing ----------------------------------------------------------------

  /** Stops reading, lets requests in flight finish, then releases everything. */
  async close(): Promise<void> {
    if (this.closed) return this.gone;
    this.closed = true;
    this.watch.close();
    for (const w of this.kickWatches.values()) w.close();
    this.kickWatches.clear();
    for (const q of this.queues) q.started = false;
    closeFds(this.fdMarks.flatMap((m) => m.fds));
    this.fdMarks = [];
    await this.waitFor(() => this.inFlight === 0);
    for (const q of this.queues) {
      closeFds([q.kickFd, q.callFd, q.errFd].filter((fd): fd is number => fd !== undefined));
      q.kickFd = q.callFd = q.errFd = undefined;
      q.stop();
    }
    this.memory.dispose();
    closeQuietly(this.fd);
    this.resolveGone();
    return this.gone;
  }
}
