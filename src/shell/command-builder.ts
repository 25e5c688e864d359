/**
 * Turns complete input lines into commands, keeping qmp-shell's transaction
 * mode:
 *
 *   transaction(                      enter the mode (prompt becomes TRANS>)
 *   block-dirty-bitmap-add node=n name=b
 *   abort                             each line is one action
 *   )                                 send them all as one `transaction`
 *
 * and the one-line form `transaction( ACTION ARGS… )` for a single action.
 * A line starting with `{` is raw JSON: a whole message outside transaction
 * mode, one action inside it.
 */

import { parseRelaxedJson } from './relaxed-json';
import { RawObject, ShellSyntaxError, parseArguments, tokenize } from './syntax';

export type QmpMessage = Record<string, unknown>;

export type TransactionAction =
  | { kind: 'command'; name: string; args: RawObject }
  | { kind: 'raw'; action: unknown };

export type BuiltCommand =
  | { kind: 'raw'; message: QmpMessage }
  | { kind: 'command'; name: string; args: RawObject }
  | { kind: 'transaction'; actions: TransactionAction[] };

export const TRANSACTION_OPEN = 'transaction(';
export const TRANSACTION_CLOSE = ')';

export class CommandBuilder {
  private actions: TransactionAction[] | null = null;

  get inTransaction(): boolean {
    return this.actions !== null;
  }

  /** Leaves transaction mode, dropping collected actions. */
  reset(): void {
    this.actions = null;
  }

  /** Returns the command a line completes, or null if there is nothing to send yet. */
  build(line: string): BuiltCommand | null {
    const trimmed = line.trim();
    if (trimmed.startsWith('{')) return this.buildRaw(trimmed);
    const words = tokenize(trimmed).words;
    if (words[0] === TRANSACTION_OPEN) {
      this.actions = [];
      words.shift();
    }
    if (words[0] === TRANSACTION_CLOSE && this.actions !== null) {
      if (words.length > 1) throw new ShellSyntaxError('Unexpected input after close of Transaction sub-shell');
      return this.finishTransaction();
    }
    if (this.actions !== null) {
      if (words.length === 0) return null;
      const closes = words.length > 1 && words[words.length - 1] === TRANSACTION_CLOSE;
      if (closes) words.pop();
      this.actions.push({ kind: 'command', name: words[0]!, args: parseArguments(words.slice(1)) });
      return closes ? this.finishTransaction() : null;
    }
    if (words.length === 0) return null;
    return { kind: 'command', name: words[0]!, args: parseArguments(words.slice(1)) };
  }

  private buildRaw(text: string): BuiltCommand | null {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      try {
        value = parseRelaxedJson(text);
      } catch (error) {
        throw new ShellSyntaxError(`Invalid JSON: ${(error as Error).message}`);
      }
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ShellSyntaxError('A JSON line must be an object');
    }
    if (this.actions !== null) {
      this.actions.push({ kind: 'raw', action: value });
      return null;
    }
    return { kind: 'raw', message: value as QmpMessage };
  }

  private finishTransaction(): BuiltCommand {
    const actions = this.actions ?? [];
    this.actions = null;
    return { kind: 'transaction', actions };
  }
}

/**
 * Joins physical lines while a `{` or `[` is still open, so JSON can be typed
 * over several lines.
 */
export class LineAssembler {
  private lines: string[] = [];

  /** True while an open bracket waits for more lines. */
  get continuing(): boolean {
    return this.lines.length > 0;
  }

  /** Returns the complete logical line, or null when more lines are needed. */
  push(line: string): string | null {
    this.lines.push(line);
    const text = this.lines.join('\n');
    if (tokenize(text).openBrackets > 0) return null;
    this.lines = [];
    return text;
  }

  reset(): void {
    this.lines = [];
  }

  /** What was collected so far (for an error message at end of input). */
  get pendingText(): string {
    return this.lines.join('\n');
  }
}
