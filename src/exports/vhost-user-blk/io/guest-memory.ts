/**
 * A vhost-user front-end's memory, as the back-end sees it: regions the
 * front-end described (guest physical address, size, its own virtual
 * address, offset into the descriptor) mapped from the descriptors it sent.
 * Translations answer undefined for anything outside the regions, so a bad
 * address from the guest is an error, never an access elsewhere.
 */
import { closeFd, mapShared, releaseMapping } from '../../../native/vhost-user';

const PAGE = 4096;

export interface RegionDescription {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

interface Region extends RegionDescription {
  mapping: ArrayBuffer;
  /** The region's bytes, inside `mapping`. */
  bytes: Buffer;
}

/** An unsigned 64-bit field as a number; addresses beyond 2^53 are out of every region. */
export function u64(buf: Buffer, offset: number): number {
  // Two 32-bit halves: no BigInt on the path of every descriptor.
  const high = buf.readUInt32LE(offset + 4);
  return high >= 0x200000 ? Number.POSITIVE_INFINITY : high * 0x100000000 + buf.readUInt32LE(offset);
}

export function readRegion(buf: Buffer, offset: number): RegionDescription {
  return { guestAddr: u64(buf, offset), size: u64(buf, offset + 8), userAddr: u64(buf, offset + 16), mmapOffset: u64(buf, offset + 24) };
}

export class GuestMemory {
  private regions: Region[] = [];
  /** Mappings replaced while requests were in flight: released once none is. */
  private retired: ArrayBuffer[] = [];

  get count(): number {
    return this.regions.length;
  }

  /** Maps a region from `fd` (which stays the caller's to close). Throws for an impossible region. */
  add(desc: RegionDescription, fd: number): void {
    if (!Number.isFinite(desc.guestAddr + desc.size + desc.userAddr + desc.mmapOffset) || desc.size <= 0) throw new Error('memory region out of range');
    for (const r of this.regions) {
      if (desc.guestAddr < r.guestAddr + r.size && r.guestAddr < desc.guestAddr + desc.size) throw new Error('memory regions overlap');
    }
    const start = Math.floor(desc.mmapOffset / PAGE) * PAGE;
    const lead = desc.mmapOffset - start;
    const mapping = mapShared(fd, start, lead + desc.size);
    this.regions.push({ ...desc, mapping, bytes: Buffer.from(mapping, lead, desc.size) });
  }

  /** Removes the region matching `desc`; false when there is none. */
  remove(desc: RegionDescription, inFlight: boolean): boolean {
    const i = this.regions.findIndex((r) => r.guestAddr === desc.guestAddr && r.size === desc.size && r.userAddr === desc.userAddr);
    if (i < 0) return false;
    this.retire(this.regions.splice(i, 1), inFlight);
    return true;
  }

  /** Drops every region; their mappings go now, or once no request uses them. */
  clear(inFlight: boolean): void {
    this.retire(this.regions.splice(0), inFlight);
  }

  private retire(regions: Region[], inFlight: boolean): void {
    for (const r of regions) {
      if (inFlight) this.retired.push(r.mapping);
      else releaseMapping(r.mapping);
    }
  }

  /** Called when no request is in flight any more. */
  idle(): void {
    for (const m of this.retired.splice(0)) releaseMapping(m);
  }

  /** The guest bytes [addr, addr + length), split where regions meet; undefined if any byte is outside them. */
  guestRange(addr: number, length: number): Buffer[] | undefined {
    const out: Buffer[] = [];
    while (length > 0) {
      const r = this.regions.find((x) => addr >= x.guestAddr && addr < x.guestAddr + x.size);
      if (!r) return undefined;
      const off = addr - r.guestAddr;
      const n = Math.min(length, r.size - off);
      out.push(r.bytes.subarray(off, off + n));
      addr += n;
      length -= n;
    }
    return out;
  }

  /** Contiguous guest bytes (a ring, a descriptor table): undefined unless inside one region. */
  guestSpan(addr: number, length: number): Buffer | undefined {
    const r = this.regions.find((x) => addr >= x.guestAddr && addr + length <= x.guestAddr + x.size);
    return r?.bytes.subarray(addr - r.guestAddr, addr - r.guestAddr + length);
  }

  /** Contiguous bytes at a front-end virtual address (SET_VRING_ADDR speaks those). */
  userSpan(addr: number, length: number): Buffer | undefined {
    const r = this.regions.find((x) => addr >= x.userAddr && addr + length <= x.userAddr + x.size);
    return r?.bytes.subarray(addr - r.userAddr, addr - r.userAddr + length);
  }

  /** Releases everything, including mappings still retired. */
  dispose(): void {
    this.clear(false);
    this.idle();
  }
}

/** Closes a descriptor the front-end sent; one already gone is no matter. */
export function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed.
  }
}

export function closeFds(fds: number[]): void {
  for (const fd of fds) closeQuietly(fd);
}
