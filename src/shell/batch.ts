/**
 * The non-interactive shell: commands from a pipe or a file, one per line
 * (JSON may span lines while a bracket is open; `#` starts a comment).
 * Every reply and every event is one JSON line on stdout, in the order they
 * arrive; parse errors and diagnostics go to stderr.
 *
 * With exitOnError the run stops at the first error reply or bad line and
 * returns 1; otherwise it returns 0 once the input is used up.
 */

import * as readline from 'node:readline';
import { helpFor } from './help';
import { isErrorReply } from './qmp-client';
import { waitForJobs } from './job-watch';
import { BUILTINS } from './builtins';
import { ShellSession } from './session';

export interface BatchOptions {
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
  errors: NodeJS.WritableStream;
  exitOnError: boolean;
}

export async function runBatch(session: ShellSession, options: BatchOptions): Promise<number> {
  const { output, errors } = options;
  const print = (text: string): void => {
    output.write(`${text}\n`);
  };
  session.onEvent = (event) => print(session.format(event));
  const lines = readline.createInterface({ input: options.input, crlfDelay: Infinity, terminal: false });
  let lineNumber = 0;
  try {
    for await (const line of lines) {
      lineNumber++;
      if (session.client.isClosed) break;
      const failed = await runLine(session, line, print, (text) => errors.write(`line ${lineNumber}: ${text}\n`));
      if (failed && options.exitOnError) return 1;
    }
  } catch (error) {
    if (!session.client.isClosed) throw error;
  } finally {
    lines.close();
  }
  if (session.client.isClosed) {
    errors.write('Disconnected\n');
    return 1;
  }
  const unfinished = session.assembler.continuing
    ? 'input ended inside an open JSON value'
    : session.builder.inTransaction
      ? "input ended inside 'transaction(' without ')'"
      : undefined;
  if (unfinished) {
    errors.write(`${unfinished}\n`);
    if (options.exitOnError) return 1;
  }
  return 0;
}

/** Runs one input line; true if it failed (bad syntax, error reply, timeout). */
async function runLine(
  session: ShellSession,
  line: string,
  print: (text: string) => void,
  complain: (text: string) => void,
): Promise<boolean> {
  const outcome = session.interpret(line);
  switch (outcome.kind) {
    case 'nothing':
      return false;
    case 'invalid':
      complain(outcome.error);
      return true;
    case 'command': {
      const reply = await session.execute(outcome.message, print);
      print(session.format(reply));
      return isErrorReply(reply);
    }
    case 'builtin':
      switch (outcome.name) {
        case 'help':
          print(helpFor(session.schema, BUILTINS, outcome.words, 100));
          return false;
        case 'jobs':
        case 'watch-jobs': {
          const reply = await waitForJobs((command, args) => session.client.execute(command, args));
          print(session.format(reply));
          return isErrorReply(reply);
        }
        case 'wait-event': {
          const result = await session.waitForEvent(outcome.words);
          if (typeof result !== 'string') return false;
          complain(result);
          return true;
        }
      }
      return false;
  }
}
