/**
 * Persistent input history: `$QBD_SHELL_HISTORY`, else `~/.qbd_shell_history`.
 * One entry per line, oldest first, at most HISTORY_SIZE entries. Failing to
 * read or write it never stops the shell.
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const HISTORY_SIZE = 1024;

export function historyPath(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.QBD_SHELL_HISTORY;
  return configured && configured !== '' ? configured : path.join(os.homedir(), '.qbd_shell_history');
}

/** Entries newest first, as readline wants them. */
export function loadHistory(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(-HISTORY_SIZE)
    .reverse();
}

/** Writes entries given newest first (readline's order). */
export function saveHistory(file: string, newestFirst: readonly string[]): void {
  const lines = newestFirst.slice(0, HISTORY_SIZE).reverse();
  try {
    fs.writeFileSync(file, lines.length === 0 ? '' : `${lines.join('\n')}\n`, { mode: 0o600 });
  } catch {
    // History is a convenience; a read-only home must not break the shell.
  }
}
