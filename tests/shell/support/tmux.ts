/**
 * Drives the interactive shell in a real terminal: a detached tmux session
 * (on a private tmux server whose socket lives in a temporary directory, so
 * a user's own sessions are never touched),
 * keys sent with send-keys, the screen read with capture-pane.
 */

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { eventually } from './tools';

export class TerminalSession {
  private constructor(private readonly dir: string, private readonly socket: string) {}

  /** Starts `command` (argv) in a 200x50 terminal. */
  static start(argv: string[], env: NodeJS.ProcessEnv = {}): TerminalSession {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-shell-tmux-'));
    const session = new TerminalSession(dir, path.join(dir, 'tmux.sock'));
    const command = argv.map(shellQuote).join(' ');
    session.tmux(['new-session', '-d', '-x', '200', '-y', '50', '-s', 'main', command], { ...process.env, ...env });
    return session;
  }

  /** Presses keys by tmux name (Enter, Tab, Up, C-c, C-d…). */
  press(...keys: string[]): void {
    this.tmux(['send-keys', '-t', 'main', ...keys]);
  }

  /** Types text literally. */
  type(text: string): void {
    this.tmux(['send-keys', '-t', 'main', '-l', text]);
  }

  /** The visible screen, without trailing spaces on lines or trailing blank lines. */
  screen(): string {
    const result = spawnSync('tmux', ['-S', this.socket, 'capture-pane', '-p', '-t', 'main'], { encoding: 'utf8' });
    return (result.stdout ?? '')
      .split('\n')
      .map((line) => line.trimEnd())
      .join('\n')
      .replace(/\n+$/, '');
  }

  /** The cursor column (0-based), to see trailing spaces the screen text drops. */
  cursorColumn(): number {
    const result = spawnSync('tmux', ['-S', this.socket, 'display-message', '-p', '-t', 'main', '#{cursor_x}'], {
      encoding: 'utf8',
    });
    return Number(result.stdout.trim());
  }

  /** The last non-empty line of the screen (where the prompt is). */
  lastLine(): string {
    const lines = this.screen().split('\n');
    return lines[lines.length - 1] ?? '';
  }

  /** Waits until the screen matches, and returns it. */
  waitFor(pattern: RegExp | ((screen: string) => boolean), timeoutMs = 5000): Promise<string> {
    const test = typeof pattern === 'function' ? pattern : (screen: string) => pattern.test(screen);
    let last = '';
    return eventually(
      () => {
        last = this.screen();
        return test(last) ? last : undefined;
      },
      timeoutMs,
      `the terminal to show ${String(pattern)}`,
    ).catch((error: Error) => {
      throw new Error(`${error.message}; screen was:\n${last}`);
    });
  }

  /** Whether the program in the terminal is still running. */
  alive(): boolean {
    return spawnSync('tmux', ['-S', this.socket, 'has-session', '-t', 'main'], { stdio: 'ignore' }).status === 0;
  }

  kill(): void {
    spawnSync('tmux', ['-S', this.socket, 'kill-server'], { stdio: 'ignore' });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private tmux(args: string[], env?: NodeJS.ProcessEnv): void {
    const result = spawnSync('tmux', ['-S', this.socket, ...args], { encoding: 'utf8', env });
    if (result.status !== 0) throw new Error(`tmux ${args[0]} failed: ${result.stderr}`);
  }
}

function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
