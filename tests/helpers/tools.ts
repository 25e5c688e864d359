/**
 * External tools the tests use (qemu-storage-daemon, qemu-img, nbdinfo…).
 * In CI they are installed and required: a missing tool fails the test.
 * Elsewhere a test that needs a missing tool is skipped, with the reason.
 */
import { execFileSync } from 'node:child_process';

const cache = new Map<string, boolean>();

export function hasTool(name: string): boolean {
  let found = cache.get(name);
  if (found === undefined) {
    try {
      execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
      found = true;
    } catch {
      found = false;
    }
    cache.set(name, found);
  }
  return found;
}

/**
 * For `describe.skipIf(!toolAvailable('x'))`: true when the tool is there.
 * Under CI a missing tool throws, which fails the test file.
 */
export function toolAvailable(name: string): boolean {
  if (hasTool(name)) return true;
  if (process.env.CI) throw new Error(`${name} is required in CI but is not installed`);
  return false;
}
