/** What qbd tells clients about itself. It claims the QEMU version whose behaviour it reproduces. */
import { version as qbdVersion } from '../package.json';

export const QEMU_COMPAT_VERSION = { major: 7, minor: 2, micro: 0 } as const;

export function versionInfo(): { qemu: { major: number; minor: number; micro: number }; package: string } {
  return { qemu: { ...QEMU_COMPAT_VERSION }, package: `qbd ${qbdVersion}` };
}

export { qbdVersion };
