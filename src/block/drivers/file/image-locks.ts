/**
 * QEMU-compatible image locking (file-posix's scheme), so qbd, QEMU,
 * qemu-img and libvirt see each other's use of an image. A node that holds
 * permission bit i takes a shared OFD lock on byte 100 + i; a node that does
 * not let others have bit i takes a shared lock on byte 200 + i. Before
 * changing its locks it probes: every permission it wants must not be denied
 * by someone (byte 200 + i free of others' locks), every permission it
 * denies must not be held by someone (byte 100 + i free).
 */
import { QmpError } from '../../../qmp/errors';
import * as native from '../../../native/native';

const PERM_BASE = 100;
const SHARED_BASE = 200;
/** QEMU's names for the permission bits, as its lock errors print them. */
const NAMES = ['consistent read', 'write', 'write unchanged', 'resize'];

export interface HeldLocks {
  perm: number;
  unshared: number;
}

function hintFor(filename: string): string {
  return `Is another process using the image [${filename}]?`;
}

function busy(fd: number, byte: number): boolean {
  return native.ofdTestLock(fd, byte, 1, 'write').conflict;
}

/** Checks, then takes, the locks for `perm`/`shared`; on conflict nothing changes and a QEMU-worded error is thrown. */
export function applyImageLocks(fd: number, filename: string, held: HeldLocks, perm: number, shared: number): HeldLocks {
  const unshared = ~shared & 0xf;
  for (let bit = 0; bit < NAMES.length; bit++) {
    const mask = 1 << bit;
    if (perm & mask && !(held.perm & mask) && busy(fd, SHARED_BASE + bit)) {
      throw QmpError.generic(`Failed to get "${NAMES[bit]}" lock`, hintFor(filename));
    }
    if (unshared & mask && !(held.unshared & mask) && busy(fd, PERM_BASE + bit)) {
      throw QmpError.generic(`Failed to get shared "${NAMES[bit]}" lock`, hintFor(filename));
    }
  }
  for (let bit = 0; bit < NAMES.length; bit++) {
    const mask = 1 << bit;
    native.ofdSetLock(fd, PERM_BASE + bit, 1, perm & mask ? 'read' : 'unlock');
    native.ofdSetLock(fd, SHARED_BASE + bit, 1, unshared & mask ? 'read' : 'unlock');
  }
  return { perm, unshared };
}
