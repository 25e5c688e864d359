/**
 * Descriptors Node cannot wrap in a stream (/dev/fuse, eventfds, UNIX
 * sockets that carry descriptors): watched from the calling thread's event
 * loop and read or written without blocking, through the native addon.
 * There is no TypeScript fallback: without the addon `fdWatchAvailable` is
 * false, and the exports that need these calls refuse to start with a
 * clear error.
 *
 * Usable on the main loop and in I/O contexts alike: a watch belongs to the
 * thread that made it, and its callback runs there.
 */
import { notSupported, optionalAddonFunction } from './native';

/** Bits of the `events` a watch callback receives. */
export const FD_READABLE = 1;
export const FD_WRITABLE = 2;

export interface FdWatch {
  /** Stops watching; the descriptor stays open. Safe to call twice. */
  close(): void;
}

/** status: 0, or a negative errno when the descriptor failed (POLLERR). */
export type FdWatchCallback = (status: number, events: number) => void;

type WatchFd = (fd: number, writable: boolean, callback: FdWatchCallback) => FdWatch;
type Transfer = (fd: number, buf: Uint8Array, offset: number, length: number) => number;

const addonWatch = optionalAddonFunction<WatchFd>('watchFd');
const addonRead = optionalAddonFunction<Transfer>('readFd');
const addonWrite = optionalAddonFunction<Transfer>('writeFd');

export const fdWatchAvailable = addonWatch !== undefined && addonRead !== undefined && addonWrite !== undefined;

/** Calls `callback` each time `fd` is readable (and, with `writable`, writable) until closed. */
export function watchFd(fd: number, writable: boolean, callback: FdWatchCallback): FdWatch {
  if (!addonWatch) throw notSupported('uv_poll_start');
  return addonWatch(fd, writable, callback);
}

/** read(2) into buf[offset, offset + length): bytes read, 0 at end, or a negative errno (-EAGAIN: nothing yet). */
export function readFd(fd: number, buf: Uint8Array, offset = 0, length = buf.byteLength - offset): number {
  if (!addonRead) throw notSupported('read');
  return addonRead(fd, buf, offset, length);
}

/** write(2) of buf[offset, offset + length): bytes written or a negative errno. */
export function writeFd(fd: number, buf: Uint8Array, offset = 0, length = buf.byteLength - offset): number {
  if (!addonWrite) throw notSupported('write');
  return addonWrite(fd, buf, offset, length);
}
