/**
 * mount(2) and umount2(2) through the native addon, for FUSE exports. There
 * is no TypeScript fallback: without the addon `fuseMountAvailable` is
 * false and a FUSE export refuses to start with a clear error.
 *
 * Both calls are synchronous and quick; failures throw Errors with `code`
 * set to the errno name ('EPERM', 'EINVAL', ...), as node:fs reports them.
 */
import { notSupported, optionalAddonFunction } from './native';

/** mount(2) flags a FUSE mount uses. */
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
/** umount2(2): detach now, finish once the last user has gone. */
export const MNT_DETACH = 0x2;

type Mount = (source: string, target: string, fstype: string, flags: number, data: string) => void;
type Umount2 = (target: string, flags: number) => void;

const addonMount = optionalAddonFunction<Mount>('mount');
const addonUmount2 = optionalAddonFunction<Umount2>('umount2');

export const fuseMountAvailable = addonMount !== undefined && addonUmount2 !== undefined;

export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (!addonMount) throw notSupported('mount');
  addonMount(source, target, fstype, flags, data);
}

export function umount2(target: string, flags: number): void {
  if (!addonUmount2) throw notSupported('umount2');
  addonUmount2(target, flags);
}
