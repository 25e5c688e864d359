/**
 * Whether this machine lets a test mount FUSE file systems in-process, as
 * both daemons do: root and /dev/fuse. Like the tools, it is required in CI.
 */
import * as fs from 'node:fs';

export function fuseMountable(): boolean {
  const ok = process.getuid?.() === 0 && fs.existsSync('/dev/fuse');
  if (!ok && process.env.CI) throw new Error('FUSE exports need root and /dev/fuse in CI');
  return ok;
}
