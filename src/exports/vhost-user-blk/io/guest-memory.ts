/**
 * A vhost-user front-end's memory, as the back-end sees it: regions the
 * front-end described (guest physical address, size, its own virtual
 * address, offset into the descriptor) mapped from the descriptors it sent.
 * Translations answer undefined for anything outside the regions, so a bad
 * address from the guest is an error, never an access elsewhere.
 */
import { closeFd, mapShared, releaseMapping } from '../../../native/vhost-user';

const PAGE = 4096;
/** Regions are mapped in pieces of at most this much: Node's buffers stop at 4 GiB, guests' memory does not. */
const CHUNK = 1024 * 1024 * 1024;

export interface RegionDescription {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

/** One mapped piece of a region the front-end described. */
interface Region extends RegionDescription {
  /** The description it belongs to: removal takes all its pieces. */
  origin: RegionDescription;
  mapping: ArrayBuffer;
  /** The piece's bytes, inside `mapping`. */
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

  /** Regions as the front-end described them. */
  get count(): number {
    return new Set(this.regions.map((r) => r.origin)).size;
  }

  /** Maps a region from `fd` (which stays the caller's to close). Throws for an impossible region. */
  add(desc: RegionDescription, fd: number): void {
    if (!Number.isFinite(desc.guestAddr + desc.size + desc.userAddr + desc.mmapOffset) || desc.size <= 0) throw new Error('memory region out of range');
    for (const r of this.regions) {
      if (desc.guestAddr < r.guestAddr + r.size && r.guestAddr < desc.guestAddr + desc.size) throw new Error('memory regions overlap');
    }
    const pieces: Region[] = [];
    try {
      for (let done = 0; done < desc.size; done += CHUNK) {
        const size = Math.min(CHUNK, desc.size - done);
        const offset = desc.mmapOffset + done;
        const start = Math.floor(offset / PAGE) * PAGE;
        const lead = offset - start;
        const mapping = mapShared(fd, start, lead + size);
        pieces.push({ guestAddr: desc.guestAddr + done, size, userAddr: desc.userAddr + done, mmapOffset: offset, origin: desc, mapping, bytes: Buffer.from(mapping, lead, size) });
      }
    } catch (err) {
      for (const p of pieces) releaseMapping(p.mapping);
      throw err;
    }
    this.regions.push(...pieces);
  }

  /** Removes the region matching `desc`; false when there is none. */
  remove(desc: RegionDescription, inFlight: boolean): boolean {
    const origin = this.regions.find((r) => r.origin.guestAddr === desc.guestAddr && r.origin.size === desc.size && r.origin.userAddr === desc.userAddr)?.origin;
    if (!origin) return false;
    this.retire(
      this.regions.filter((r) => r.origin === origin),
      inFlight,
    );
    this.regions = this.regions.filter((r) => r.origin !== origin);
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
