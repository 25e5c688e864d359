/**
 * A small vhost-user front-end for the tests and benchmark: connects to a
 * back-end's socket, sends messages (with descriptors), shares a memfd as guest memory, and
 * drives split virtqueues with virtio-blk requests, as a VM's virtio-blk
 * driver would, without booting one.
 */
import * as net from 'node:net';
import { dupFd } from '../src/native/native';
import { readFd, watchFd, writeFd } from '../src/native/fd-watch';
import { closeFd, eventFd, mapShared, memFd, recvWithFds, releaseMapping, sendWithFds } from '../src/native/vhost-user';
import * as P from '../src/exports/vhost-user-blk/protocol';

const EAGAIN = 11;

export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

/** Guest memory: one memfd, seen by the guest at GUEST_BASE and by the front-end at USER_BASE. */
export const GUEST_BASE = 0x100000n;
export const USER_BASE = 0x7f1200000000n;

export class VhostUserFrontend {
  private pending = Buffer.alloc(0);
  private closed = false;
  private waiters: Array<() => void> = [];
  private readonly watch;

  private constructor(readonly fd: number) {
    this.watch = watchFd(fd, false, () => this.pull());
  }

  static async connect(socketPath: string): Promise<VhostUserFrontend> {
    const socket = net.connect({ path: socketPath });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    // The back-end says nothing before it is asked: nothing can have been read yet.
    const fd = dupFd((socket as unknown as { _handle: { fd: number } })._handle.fd);
    socket.destroy();
    return new VhostUserFrontend(fd);
  }

  private pull(): void {
    const buf = Buffer.alloc(65536);
    for (;;) {
      const got = recvWithFds(this.fd, buf);
      for (const fd of got.fds) closeFd(fd);
      if (got.bytes === -EAGAIN) break;
      if (got.bytes <= 0) {
        this.closed = true;
        this.watch.close();
        break;
      }
      this.pending = Buffer.concat([this.pending, buf.subarray(0, got.bytes)]);
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /** True once the back-end closed the connection. */
  async disconnected(): Promise<boolean> {
    while (!this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return true;
  }

  send(request: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], flags = P.FLAG_VERSION): void {
    const msg = Buffer.alloc(P.HEADER_SIZE + payload.length);
    msg.writeUInt32LE(request, 0);
    msg.writeUInt32LE(flags, 4);
    msg.writeUInt32LE(payload.length, 8);
    payload.copy(msg, P.HEADER_SIZE);
    const n = sendWithFds(this.fd, msg, fds);
    if (n !== msg.length) throw new Error(`sendmsg: ${n}`);
  }

  async reply(): Promise<Reply> {
    for (;;) {
      if (this.pending.length >= P.HEADER_SIZE) {
        const size = this.pending.readUInt32LE(8);
        if (this.pending.length >= P.HEADER_SIZE + size) {
          const r = { request: this.pending.readUInt32LE(0), flags: this.pending.readUInt32LE(4), payload: this.pending.subarray(P.HEADER_SIZE, P.HEADER_SIZE + size) };
          this.pending = this.pending.subarray(P.HEADER_SIZE + size);
          return r;
        }
      }
      if (this.closed) throw new Error('back-end closed the connection');
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  async call(request: number, payload?: Buffer, fds?: number[], flags?: number): Promise<Reply> {
    this.send(request, payload, fds, flags);
    return this.reply();
  }

  async getU64(request: number): Promise<bigint> {
    return (await this.call(request)).payload.readBigUInt64LE(0);
  }

  close(): void {
    this.watch.close();
    closeFd(this.fd);
  }
}

export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

export function vringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index, 0);
  b.writeUInt32LE(num, 4);
  return b;
}

/** Guest memory and one split queue laid out in it. */
export interface GuestQueue {
  index: number;
  size: number;
  /** Guest physical addresses. */
  desc: bigint;
  avail: bigint;
  used: bigint;
  kick: number;
  call: number;
  nextAvail: number;
  lastUsed: number;
}

/** How much of guest memory the front-end maps for itself. */
const MAPPED_BY_FRONTEND = 1024 * 1024 * 1024;
/** Guest memory unless asked otherwise. */
export const MEM_SIZE = 4 * 1024 * 1024;
/** Where request data starts, as an offset in guest memory. */
export const DATA_OFFSET = 0x100000;
/** Guest memory each request slot takes: its header, status byte and data (the data at +4 KiB). */
export const SLOT_SIZE = 0x40000;

/** A request laid out and made available, not yet completed. */
export interface Submitted {
  queue: GuestQueue;
  head: number;
  statusAddr: bigint;
  dataAddr: bigint;
  dataLen: number;
}

export interface BlockFrontendOptions {
  queues?: number;
  queueSize?: number;
  eventIdx?: boolean;
  memSize?: number;
  slotSize?: number;
}

/**
 * A front-end with guest memory shared: features negotiated, memory table
 * sent, queues set up and enabled, as QEMU's vhost-user-blk device does.
 */
export class BlockFrontend {
  readonly mem: Buffer;
  readonly memFd: number;
  readonly queues: GuestQueue[] = [];
  private readonly mapping: ArrayBuffer;
  private readonly callWatches = new Map<GuestQueue, { close(): void; waiters: Array<() => void> }>();

  private constructor(
    readonly fe: VhostUserFrontend,
    readonly features: bigint,
    readonly protocolFeatures: bigint,
    readonly memSize: number,
    readonly slotSize: number,
  ) {
    this.memFd = memFd('qbd-guest', memSize);
    // The front-end itself sees at most the first GiB (rings and request slots live there).
    this.mapping = mapShared(this.memFd, 0, Math.min(memSize, MAPPED_BY_FRONTEND));
    this.mem = Buffer.from(this.mapping);
  }

  /** Connects and negotiates every feature the back-end offers (of those this front-end knows). */
  static async open(socketPath: string, opts: BlockFrontendOptions = {}): Promise<BlockFrontend> {
    const fe = await VhostUserFrontend.connect(socketPath);
    const offered = await fe.getU64(P.REQ.GET_FEATURES);
    const known: number[] = [P.F.BLK_SIZE_MAX, P.F.BLK_SEG_MAX, P.F.BLK_RO, P.F.BLK_BLK_SIZE, P.F.BLK_FLUSH, P.F.BLK_TOPOLOGY, P.F.BLK_MQ, P.F.BLK_DISCARD, P.F.BLK_WRITE_ZEROES, P.F.RING_INDIRECT_DESC, P.F.PROTOCOL_FEATURES, P.F.VERSION_1];
    if (opts.eventIdx) known.push(P.F.RING_EVENT_IDX);
    const features = offered & known.reduce((m, b) => m | P.bit(b), 0n);
    const protoOffered = await fe.getU64(P.REQ.GET_PROTOCOL_FEATURES);
    const proto = protoOffered & (P.bit(P.PROTOCOL_F.MQ) | P.bit(P.PROTOCOL_F.REPLY_ACK) | P.bit(P.PROTOCOL_F.CONFIG));
    fe.send(P.REQ.SET_PROTOCOL_FEATURES, u64(proto));
    fe.send(P.REQ.SET_OWNER);
    fe.send(P.REQ.SET_FEATURES, u64(features));
    const blk = new BlockFrontend(fe, features, proto, opts.memSize ?? MEM_SIZE, opts.slotSize ?? SLOT_SIZE);
    await blk.sendMemTable();
    const queues = opts.queues ?? 1;
    for (let i = 0; i < queues; i++) await blk.setUpQueue(i, opts.queueSize ?? 16);
    return blk;
  }

  /** Sends a message asking for an acknowledgement; answers the acknowledged status (0: success). */
  async acked(request: number, payload?: Buffer, fds?: number[]): Promise<bigint> {
    const r = await this.fe.call(request, payload, fds, P.FLAG_VERSION | P.FLAG_NEED_REPLY);
    return r.payload.readBigUInt64LE(0);
  }

  async sendMemTable(): Promise<void> {
    const table = Buffer.alloc(8 + P.MEM_REGION_SIZE);
    table.writeUInt32LE(1, 0);
    table.writeBigUInt64LE(GUEST_BASE, 8);
    table.writeBigUInt64LE(BigInt(this.memSize), 16);
    table.writeBigUInt64LE(USER_BASE, 24);
    table.writeBigUInt64LE(0n, 32);
    const status = await this.acked(P.REQ.SET_MEM_TABLE, table, [this.memFd]);
    if (status !== 0n) throw new Error(`SET_MEM_TABLE failed: ${status}`);
  }

  /** Queue i lives at offset i * 64 KiB: descriptors, then the available ring at +16 KiB, the used ring at +32 KiB. */
  async setUpQueue(index: number, size: number): Promise<void> {
    const base = BigInt(index * 0x10000);
    const q: GuestQueue = { index, size, desc: GUEST_BASE + base, avail: GUEST_BASE + base + 0x4000n, used: GUEST_BASE + base + 0x8000n, kick: eventFd(), call: eventFd(), nextAvail: 0, lastUsed: 0 };
    this.queues[index] = q;
    this.fe.send(P.REQ.SET_VRING_NUM, vringState(index, size));
    this.fe.send(P.REQ.SET_VRING_BASE, vringState(index, 0));
    const addr = Buffer.alloc(40);
    addr.writeUInt32LE(index, 0);
    addr.writeUInt32LE(0, 4);
    addr.writeBigUInt64LE(q.desc - GUEST_BASE + USER_BASE, 8);
    addr.writeBigUInt64LE(q.used - GUEST_BASE + USER_BASE, 16);
    addr.writeBigUInt64LE(q.avail - GUEST_BASE + USER_BASE, 24);
    this.fe.send(P.REQ.SET_VRING_ADDR, addr);
    this.fe.send(P.REQ.SET_VRING_KICK, u64(BigInt(index)), [q.kick]);
    this.fe.send(P.REQ.SET_VRING_CALL, u64(BigInt(index)), [q.call]);
    const status = await this.acked(P.REQ.SET_VRING_ENABLE, vringState(index, 1));
    if (status !== 0n) throw new Error(`SET_VRING_ENABLE failed: ${status}`);
  }

  /** Guest memory at a guest physical address. */
  at(gpa: bigint, length: number): Buffer {
    const off = Number(gpa - GUEST_BASE);
    return this.mem.subarray(off, off + length);
  }

  writeDesc(q: GuestQueue, i: number, addr: bigint, len: number, flags: number, next: number): void {
    const d = this.at(q.desc + BigInt(i * P.DESC_SIZE), P.DESC_SIZE);
    d.writeBigUInt64LE(addr, 0);
    d.writeUInt32LE(len, 8);
    d.writeUInt16LE(flags, 12);
    d.writeUInt16LE(next, 14);
  }

  /** Makes chain head `head` available and kicks. */
  publish(q: GuestQueue, head: number): void {
    const avail = this.at(q.avail, 4 + 2 * q.size + 2);
    avail.writeUInt16LE(head, 4 + 2 * (q.nextAvail % q.size));
    q.nextAvail = (q.nextAvail + 1) & 0xffff;
    avail.writeUInt16LE(q.nextAvail, 2);
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    writeFd(q.kick, one);
  }

  /** Waits for the next used element; answers its id and length. */
  async nextUsed(q: GuestQueue): Promise<{ id: number; len: number }> {
    const used = this.at(q.used, 4 + 8 * q.size + 2);
    // With EVENT_IDX the device interrupts only once the used index passes used_event: ask for the next one.
    this.at(q.avail + BigInt(4 + 2 * q.size), 2).writeUInt16LE(q.lastUsed);
    while (used.readUInt16LE(2) === q.lastUsed) await this.waitCall(q);
    const slot = q.lastUsed % q.size;
    q.lastUsed = (q.lastUsed + 1) & 0xffff;
    return { id: used.readUInt32LE(4 + 8 * slot), len: used.readUInt32LE(8 + 8 * slot) };
  }

  /** Waits for the next interrupt of `q` (one watch per queue, kept until close). */
  private waitCall(q: GuestQueue): Promise<void> {
    let watch = this.callWatches.get(q);
    if (!watch) {
      const eight = Buffer.alloc(8);
      const waiters: Array<() => void> = [];
      const w = watchFd(q.call, false, () => {
        readFd(q.call, eight);
        for (const resolve of waiters.splice(0)) resolve();
      });
      watch = { close: () => w.close(), waiters };
      this.callWatches.set(q, watch);
    }
    const waiters = watch.waiters;
    return new Promise((resolve) => waiters.push(resolve));
  }

  /**
   * Lays out one virtio-blk request in `slot` as a chain of three
   * descriptors (header, data, status; two without data) at 3 * slot in the
   * queue's table, with its buffers in the slot's guest memory, and makes it
   * available.
   */
  submit(type: number, sector: bigint, data: Buffer | number, opts: { queue?: number; slot?: number } = {}): Submitted {
    const q = this.queues[opts.queue ?? 0];
    const slot = opts.slot ?? 0;
    const head = slot * 3;
    const hdrAddr = GUEST_BASE + BigInt(DATA_OFFSET + slot * this.slotSize);
    const dataAddr = hdrAddr + 0x1000n;
    const dataLen = typeof data === 'number' ? data : data.length;
    const statusAddr = hdrAddr + 0x100n;
    const hdr = this.at(hdrAddr, P.BLK_REQ_HEADER);
    hdr.writeUInt32LE(type, 0);
    hdr.writeUInt32LE(0, 4);
    hdr.writeBigUInt64LE(sector, 8);
    const deviceWrites = type === P.BLK_T.IN || type === P.BLK_T.GET_ID;
    if (typeof data !== 'number') data.copy(this.at(dataAddr, dataLen));
    else this.at(dataAddr, dataLen).fill(0xee);
    this.at(statusAddr, 1)[0] = 0xff;
    if (dataLen > 0) {
      this.writeDesc(q, head, hdrAddr, P.BLK_REQ_HEADER, P.DESC_F_NEXT, head + 1);
      this.writeDesc(q, head + 1, dataAddr, dataLen, P.DESC_F_NEXT | (deviceWrites ? P.DESC_F_WRITE : 0), head + 2);
      this.writeDesc(q, head + 2, statusAddr, 1, P.DESC_F_WRITE, 0);
    } else {
      this.writeDesc(q, head, hdrAddr, P.BLK_REQ_HEADER, P.DESC_F_NEXT, head + 2);
      this.writeDesc(q, head + 2, statusAddr, 1, P.DESC_F_WRITE, 0);
    }
    this.publish(q, head);
    return { queue: q, head, statusAddr, dataAddr, dataLen };
  }

  /** One request, waited for: its status byte, the used length and the data buffer. */
  async request(type: number, sector: bigint, data: Buffer | number, opts: { queue?: number; slot?: number } = {}): Promise<{ status: number; len: number; data: Buffer }> {
    const s = this.submit(type, sector, data, opts);
    const used = await this.nextUsed(s.queue);
    if (used.id !== s.head) throw new Error(`used id ${used.id}, expected ${s.head}`);
    return { status: this.at(s.statusAddr, 1)[0], len: used.len, data: Buffer.from(this.at(s.dataAddr, s.dataLen)) };
  }

  async config(size: number = P.CONFIG.SIZE): Promise<Buffer> {
    const req = Buffer.alloc(12 + size);
    req.writeUInt32LE(0, 0);
    req.writeUInt32LE(size, 4);
    const r = await this.fe.call(P.REQ.GET_CONFIG, req);
    return r.payload.subarray(12);
  }

  close(): void {
    this.fe.close();
    for (const w of this.callWatches.values()) w.close();
    this.callWatches.clear();
    for (const q of this.queues) {
      closeFd(q.kick);
      closeFd(q.call);
    }
    releaseMapping(this.mapping);
    closeFd(this.memFd);
  }
}
