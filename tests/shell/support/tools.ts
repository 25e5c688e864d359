/**
 * External tools and the built shell, for the integration tests.
 *
 * A missing tool skips the tests on a developer machine but fails them when
 * CI is set, so a broken CI image cannot pass silently.
 */

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const QBD_BIN = path.join(REPO_ROOT, 'bin', 'qbd');
const SHELL_SOURCES = path.join(REPO_ROOT, 'src', 'shell');
const SHELL_BUILD = path.join(REPO_ROOT, 'dist', 'src', 'shell');

export function toolAvailable(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** True when the tests should be skipped (tools missing, not on CI). */
export function skipWithout(...tools: string[]): boolean {
  return tools.some((tool) => !toolAvailable(tool)) && !process.env.CI;
}

/** Throws when a tool is missing (reached on CI only; elsewhere the suite is skipped). */
export function requireTools(...tools: string[]): void {
  const missing = tools.filter((tool) => !toolAvailable(tool));
  if (missing.length > 0) throw new Error(`required tools missing: ${missing.join(', ')}`);
}

/** The shell runs from dist/: make sure it is there and not older than its sources. */
export function requireBuiltShell(): void {
  for (const source of fs.readdirSync(SHELL_SOURCES)) {
    if (!source.endsWith('.ts')) continue;
    const built = path.join(SHELL_BUILD, source.replace(/\.ts$/, '.js'));
    if (!fs.existsSync(built)) throw new Error(`${built} is missing: build first (npx tsc -p .)`);
    if (fs.statSync(built).mtimeMs < fs.statSync(path.join(SHELL_SOURCES, source)).mtimeMs) {
      throw new Error(`${built} is older than its source: build first (npx tsc -p .)`);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
