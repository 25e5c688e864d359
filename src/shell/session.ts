/**
 * What both front ends share: turning input lines into commands (or the
 * shell's own commands), sending them, echo (`-v`), the log file (`-l`),
 * output format (`-p`), and the record of events that `wait-event` searches.
 *
 * The front ends (repl.ts, batch.ts) decide where text goes and when.
 */

import * as fs from 'node:fs';
import { BuiltCommand, CommandBuilder, LineAssembler, QmpMessage } from './command-builder';
import { BUILTIN_NAMES } from './builtins';
import { EventRecord } from './event-record';
import { formatJson } from './json-text';
import { LiveNames } from './live-names';
import { QmpClient, QmpEvent, QmpReply } from './qmp-client';
import { toQmpMessage } from './qmp-message';
import { QmpSchema } from './schema';
import { ShellSyntaxError, tokenize } from './syntax';
import { ArgumentTyper, TypingError } from './typing';

export interface SessionOptions {
  pretty: boolean;
  verbose: boolean;
  logFile?: string;
}

export type LineOutcome =
  | { kind: 'nothing' }
  | { kind: 'builtin'; name: string; words: string[] }
  | { kind: 'command'; message: QmpMessage }
  | { kind: 'invalid'; error: string };

export class ShellSession {
  readonly builder = new CommandBuilder();
  readonly assembler = new LineAssembler();
  readonly typer: ArgumentTyper;
  readonly names: LiveNames;
  /** Called for every event, after it is recorded and logged. */
  onEvent: (event: QmpEvent) => void = () => undefined;
  private readonly logFd: number | undefined;
  private readonly events = new EventRecord();

  constructor(readonly client: QmpClient, readonly schema: QmpSchema | undefined, readonly options: SessionOptions) {
    this.typer = new ArgumentTyper(schema);
    this.names = new LiveNames((command, args) => client.execute(command, args));
    this.logFd = options.logFile === undefined ? undefined : fs.openSync(options.logFile, 'w');
    client.on('event', (event) => this.receiveEvent(event));
  }

  /** JSON text in the session's output format. */
  format(value: unknown): string {
    return formatJson(value, { pretty: this.options.pretty });
  }

  /** Reads one physical input line. */
  interpret(line: string): LineOutcome {
    const text = this.assembler.push(line);
    if (text === null) return { kind: 'nothing' };
    const trimmed = text.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return { kind: 'nothing' };
    if (!this.builder.inTransaction) {
      const words = tokenize(trimmed).words;
      if (BUILTIN_NAMES.includes(words[0]!)) return { kind: 'builtin', name: words[0]!, words: words.slice(1) };
    }
    let built: BuiltCommand | null;
    try {
      built = this.builder.build(trimmed);
      if (built === null) return { kind: 'nothing' };
      return { kind: 'command', message: toQmpMessage(built, this.typer) };
    } catch (error) {
      if (error instanceof ShellSyntaxError || error instanceof TypingError) {
        return { kind: 'invalid', error: `Error while parsing command line: ${error.message}` };
      }
      throw error;
    }
  }

  /** Sends a message; the caller prints the reply. `echo` receives the -v text. */
  async execute(message: QmpMessage, echo: (text: string) => void): Promise<QmpReply> {
    if (this.options.verbose) echo(this.format(message));
    const reply = await this.client.send(message);
    this.names.invalidate();
    this.log({ ...message, ...reply });
    return reply;
  }

  /** Drops a half-typed multi-line value or transaction (Ctrl-C). */
  discardPendingInput(): void {
    this.assembler.reset();
    this.builder.reset();
  }

  close(): void {
    if (this.logFd !== undefined) fs.closeSync(this.logFd);
    this.client.close();
  }

  /** Waits for an event, as `wait-event WORDS…` asks (see EventRecord.waitFor). */
  waitForEvent(words: readonly string[], signal?: AbortSignal): Promise<QmpEvent | string> {
    return this.events.waitFor(words, () => this.client.isClosed, signal);
  }

  private receiveEvent(event: QmpEvent): void {
    this.events.record(event);
    this.names.invalidate();
    this.log(event);
    this.onEvent(event);
  }

  private log(value: unknown): void {
    if (this.logFd !== undefined) fs.writeSync(this.logFd, `${this.format(value)}\n`);
  }
}
