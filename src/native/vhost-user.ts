/**
 * The addon calls a vhost-user back-end needs (and the front-end its tests
 * play): messages with descriptors over a UNIX socket, guest memory mapped
 * from a front-end's descriptors, eventfds and memfds. There is no
 * TypeScript fallback: without the addon `vhostUserCallsAvailable` is false
 * and the vhost-user-blk export refuses to start.
 *
 * Usable from any thread; a mapping belongs to the thread that made it.
 */
import { notSupported, optionalAddonFunction } from './native';

/** What one recvmsg brought: `bytes` read (0 at end of stream) or a negative errno, and the descriptors that came along. */
export interface Received {
  bytes: number;
  fds: number[];
}

type Recv = (fd: number, buf: Uint8Array, offset: number, length: number) => Received;
type Send = (fd: number, buf: Uint8Array, offset: number, length: number, fds: number[]) => number;

const addonRecv = optionalAddonFunction<Recv>('recvWithFds');
const addonSend = optionalAddonFunction<Send>('sendWithFds');
const addonMap = optionalAddonFunction<(fd: number, offset: number, length: number) => ArrayBuffer>('mapShared');
const addonRelease = optionalAddonFunction<(mapping: ArrayBuffer) => void>('releaseMapping');
const addonEventFd = optionalAddonFunction<(nonBlocking: boolean) => number>('eventFd');
const addonMemFd = optionalAddonFunction<(name: string, size: number) => number>('memFd');
const addonClose = optionalAddonFunction<(fd: number) => void>('closeFd');
const addonNonBlocking = optionalAddonFunction<(fd: number) => void>('setNonBlocking');

export const vhostUserCallsAvailable = [addonRecv, addonSend, addonMap, addonRelease, addonEventFd, addonMemFd, addonClose, addonNonBlocking].every((f) => f !== undefined);

/** Non-blocking recvmsg into buf[offset, offset + length); -EAGAIN when nothing is there yet. */
export function recvWithFds(fd: number, buf: Uint8Array, offset = 0, length = buf.byteLength - offset): Received {
  if (!addonRecv) throw notSupported('recvmsg');
  return addonRecv(fd, buf, offset, length);
}

/** Non-blocking sendmsg of buf[offset, offset + length) with `fds` attached: bytes sent or a negative errno. */
export function sendWithFds(fd: number, buf: Uint8Array, fds: number[] = [], offset = 0, length = buf.byteLength - offset): number {
  if (!addonSend) throw notSupported('sendmsg');
  return addonSend(fd, buf, offset, length, fds);
}

/** The range [offset, offset + length) of a shared-memory descriptor, mapped read-write and shared. */
export function mapShared(fd: number, offset: number, length: number): ArrayBuffer {
  if (!addonMap) throw notSupported('mmap');
  return addonMap(fd, offset, length);
}

/** Ends JavaScript's access to a mapping; the memory is unmapped once nothing refers to it. */
export function releaseMapping(mapping: ArrayBuffer): void {
  if (!addonRelease) throw notSupported('munmap');
  addonRelease(mapping);
}

/** A new eventfd (close-on-exec), counter 0. */
export function eventFd(nonBlocking = true): number {
  if (!addonEventFd) throw notSupported('eventfd');
  return addonEventFd(nonBlocking);
}

/** A new memfd of `size` bytes (close-on-exec). */
export function memFd(name: string, size: number): number {
  if (!addonMemFd) throw notSupported('memfd_create');
  return addonMemFd(name, size);
}

/** Closes a descriptor node:fs did not open (received ones, eventfds), without fs's warning in workers. */
export function closeFd(fd: number): void {
  if (!addonClose) throw notSupported('close');
  addonClose(fd);
}

/** Sets O_NONBLOCK on a descriptor (shared with whoever else holds it, as the flag belongs to the open file). */
export function setNonBlocking(fd: number): void {
  if (!addonNonBlocking) throw notSupported('fcntl(F_SETFL)');
  addonNonBlocking(fd);
}
