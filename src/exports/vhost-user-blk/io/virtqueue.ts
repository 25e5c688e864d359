/**
 * One split virtqueue (virtio 1.1, 2.6) served by the back-end: its rings
 * live in guest memory; requests are taken from the available ring as
 * descriptor chains (direct or indirect) and given back on the used ring.
 * Anything malformed — an address outside guest memory, a loop, an index
 * past the table, a readable buffer after a writable one — throws
 * VirtqueueError: the front-end is broken and gets disconnected.
 */
import * as P from '../protocol';
import type { GuestMemory } from './guest-memory';
import { u64 } from './guest-memory';

export class VirtqueueError extends Error {}

/** A request as the guest laid it out: what the device reads, then what it writes. */
export interface Chain {
  head: number;
  readable: Buffer[];
  writable: Buffer[];
}

/** Ring addresses as the front-end gave them (its own virtual addresses). */
interface RingAddresses {
  desc: number;
  used: number;
  avail: number;
}

/**
 * Adds guest buffers to a list, joining each to the one before when they
 * are adjacent in the same mapping: a guest often splits a request into
 * page-sized descriptors of contiguous memory, and one buffer takes one copy.
 */
function append(list: Buffer[], bufs: Buffer[]): void {
  for (const b of bufs) {
    const last = list[list.length - 1];
    if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
      list[list.length - 1] = Buffer.from(b.buffer, last.byteOffset, last.length + b.length);
    } else {
      list.push(b);
    }
  }
}

function fail(why: string): never {
  throw new VirtqueueError(why);
}

export class SplitQueue {
  size = 0;
  /** The next available-ring entry to take. */
  lastAvail = 0;
  private usedIdx = 0;
  /** The used index when the guest was last notified. */
  private signalledUsed = 0;
  private addrs: RingAddresses | undefined;
  private desc: Buffer | undefined;
  private avail: Buffer | undefined;
  private used: Buffer | undefined;
  kickFd: number | undefined;
  callFd: number | undefined;
  errFd: number | undefined;
  /** SET_VRING_ENABLE (or, without protocol features, the kick) turns it on. */
  enabled = false;
  /** A kick descriptor arrived: the ring may be processed. */
  started = false;
  /** Requests taken and not yet given back. */
  inFlight = 0;

  constructor(readonly index: number) {}

  get ready(): boolean {
    return this.started && this.enabled && this.desc !== undefined;
  }

  /** Takes the rings' addresses and finds them in guest memory; false when they are not all there. */
  setAddresses(addrs: RingAddresses, mem: GuestMemory): boolean {
    this.addrs = addrs;
    if (!this.translate(mem)) return false;
    // The front-end may hand over a ring already in use: continue from its used index.
    this.usedIdx = this.signalledUsed = this.used!.readUInt16LE(2);
    return true;
  }

  /** Finds the rings in (new) guest memory; false when they are not all there. */
  translate(mem: GuestMemory): boolean {
    this.desc = this.avail = this.used = undefined;
    const a = this.addrs;
    if (!a || this.size === 0) return false;
    const desc = mem.userSpan(a.desc, P.DESC_SIZE * this.size);
    const avail = mem.userSpan(a.avail, 6 + 2 * this.size);
    const used = mem.userSpan(a.used, 6 + 8 * this.size);
    if (!desc || !avail || !used) return false;
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    return true;
  }

  setBase(base: number): void {
    this.lastAvail = base & 0xffff;
  }

  /** Stops the ring (GET_VRING_BASE): answers where the front-end should resume. */
  stop(): number {
    this.started = false;
    this.desc = this.avail = this.used = undefined;
    this.addrs = undefined;
    return this.lastAvail;
  }

  /** Takes the next request, or undefined when the guest has made none. */
  pop(mem: GuestMemory, indirect: boolean, eventIdx: boolean): Chain | undefined {
    const avail = this.avail;
    if (!avail || !this.desc || !this.used) return undefined;
    const availIdx = avail.readUInt16LE(2);
    if (availIdx === this.lastAvail) return undefined;
    if (((availIdx - this.lastAvail) & 0xffff) > this.size) fail('available index moved past the ring');
    const head = avail.readUInt16LE(4 + 2 * (this.lastAvail % this.size));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (eventIdx) this.used.writeUInt16LE(this.lastAvail, 4 + 8 * this.size);
    const chain = this.walk(mem, head, indirect);
    this.inFlight++;
    return chain;
  }

  private walk(mem: GuestMemory, head: number, indirect: boolean): Chain {
    const chain: Chain = { head, readable: [], writable: [] };
    let table = this.desc!;
    let limit = this.size;
    let inIndirect = false;
    let i = head;
    let seen = 0;
    if (i >= limit) fail('chain head past the descriptor table');
    for (;;) {
      if (++seen > limit) fail('descriptor chain loops');
      const at = i * P.DESC_SIZE;
      const addr = u64(table, at);
      const len = table.readUInt32LE(at + 8);
      const flags = table.readUInt16LE(at + 12);
      const next = table.readUInt16LE(at + 14);
      if (flags & P.DESC_F_INDIRECT) {
        if (!indirect || inIndirect) fail('indirect descriptor not allowed here');
        if (flags & P.DESC_F_NEXT) fail('indirect descriptor with a next one');
        if (len === 0 || len % P.DESC_SIZE !== 0 || len / P.DESC_SIZE > P.MAX_QUEUE_SIZE) fail('bad indirect table size');
        table = mem.guestSpan(addr, len) ?? fail('indirect table outside guest memory');
        limit = len / P.DESC_SIZE;
        inIndirect = true;
        i = 0;
        seen = 0;
        continue;
      }
      const bufs = mem.guestRange(addr, len) ?? fail('buffer outside guest memory');
      if (flags & P.DESC_F_WRITE) append(chain.writable, bufs);
      else if (chain.writable.length > 0) fail('readable buffer after a writable one');
      else append(chain.readable, bufs);
      if (!(flags & P.DESC_F_NEXT)) return chain;
      i = next;
      if (i >= limit) fail('next descriptor past the table');
    }
  }

  /** Gives a request back with `len` bytes written; false when the ring has gone (stopped or reset). */
  push(head: number, len: number): boolean {
    this.inFlight--;
    const used = this.used;
    if (!used) return false;
    const slot = this.usedIdx % this.size;
    used.writeUInt32LE(head, 4 + 8 * slot);
    used.writeUInt32LE(len, 8 + 8 * slot);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    // The element is written before the index that publishes it (stores stay in order on the CPU).
    used.writeUInt16LE(this.usedIdx, 2);
    return true;
  }

  /** Whether the guest wants an interrupt for what was pushed since the last one. */
  shouldNotify(eventIdx: boolean): boolean {
    const avail = this.avail;
    if (!avail || this.usedIdx === this.signalledUsed) return false;
    const old = this.signalledUsed;
    this.signalledUsed = this.usedIdx;
    if (!eventIdx) return (avail.readUInt16LE(0) & P.AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = avail.readUInt16LE(4 + 2 * this.size);
    return ((this.usedIdx - usedEvent - 1) & 0xffff) < ((this.usedIdx - old) & 0xffff);
  }

  /** With EVENT_IDX: asks for a kick at the next request, then says whether one came meanwhile. */
  armKick(): boolean {
    if (!this.used || !this.avail) return false;
    this.used.writeUInt16LE(this.lastAvail, 4 + 8 * this.size);
    return this.avail.readUInt16LE(2) !== this.lastAvail;
  }
}
