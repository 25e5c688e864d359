/**
 * What both front ends share: turning input lines into commands, sending
 * them, echo (`-v`), the log file (`-l`), output format (`-p`), the shell's
 * own commands, and the event record that `wait-event` searches.
 *
 * The front ends (repl.ts, batch.ts) decide where text goes and when.
 */

import * as fs from 'node:fs';
import { BuiltCommand, CommandBuilder, LineAssembler, QmpMessage } from './command-builder';
import { BuiltinHelp } from './help';
import { formatJson } from './json-text';
import { LiveNames } from './live-names';
import { QmpClient, QmpEvent, QmpReply } from './qmp-client';
import { toQmpMessage } from './qmp-message';
import { QmpSchema } from './schema';
import { RawObject, RawValue, ShellSyntaxError, parseArguments, tokenize } from './syntax';
import { ArgumentTyper, TypingError } from './typing';

export interface SessionOptions {
  pretty: boolean;
  verbose: boolean;
  logFile?: string;
}

export const BUILTINS: readonly BuiltinHelp[] = [
  { name: 'help', usage: 'help [COMMAND [tag=value…]]', summary: 'list commands, or show the arguments of one (from the schema)' },
  { name: 'jobs', usage: 'jobs', summary: 'live view of the jobs: progress, offset/length, speed, status (any key stops)' },
  { name: 'watch-jobs', usage: 'watch-jobs', summary: 'same as jobs' },
  {
    name: 'wait-event',
    usage: 'wait-event EVENT [key=value…] [timeout=SECONDS]',
    summary: 'wait for an event whose data matches (default timeout 30 s)',
  },
];

export const BUILTIN_NAMES = BUILTINS.map((builtin) => builtin.name);

export type LineOutcome =
  | { kind: 'nothing' }
  | { kind: 'builtin'; name: string; words: string[] }
  | { kind: 'command'; message: QmpMessage }
  | { kind: 'invalid'; error: string };

const EVENT_RECORD_LIMIT = 1000;
const DEFAULT_WAIT_SECONDS = 30;

export class ShellSession {
  readonly builder = new CommandBuilder();
  readonly assembler = new LineAssembler();
  readonly typer: ArgumentTyper;
  readonly names: LiveNames;
  /** Called for every event, after it is recorded and logged. */
  onEvent: (event: QmpEvent) => void = () => undefined;
  private readonly logFd: number | undefined;
  private readonly events: QmpEvent[] = [];
  private eventsConsumed = 0;
  private readonly eventWaiters = new Set<() => void>();

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

  private receiveEvent(event: QmpEvent): void {
    this.events.push(event);
    if (this.events.length > EVENT_RECORD_LIMIT) {
      const drop = this.events.length - EVENT_RECORD_LIMIT;
      this.events.splice(0, drop);
      this.eventsConsumed = Math.max(0, this.eventsConsumed - drop);
    }
    this.names.invalidate();
    this.log(event);
    for (const wake of [...this.eventWaiters]) wake();
    this.onEvent(event);
  }

  private log(value: unknown): void {
    if (this.logFd !== undefined) fs.writeSync(this.logFd, `${this.format(value)}\n`);
  }
}

/** Every key=value of the filter equals the event data at that (dotted) path. */
function matches(data: unknown, filter: RawObject): boolean {
  for (const [key, expected] of filter.members) {
    const actual = typeof data === 'object' && data !== null ? (data as Record<string, unknown>)[key] : undefined;
    if (expected.kind === 'object') {
      if (!matches(actual, expected)) return false;
    } else if (textOf(expected) !== (typeof actual === 'string' ? actual : formatJson(actual))) {
      return false;
    }
  }
  return true;
}

function textOf(value: RawValue): string {
  if (value.kind === 'bare') return value.text;
  if (value.kind === 'json') return typeof value.value === 'string' ? value.value : formatJson(value.value);
  return '';
}
