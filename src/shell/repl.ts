/**
 * The interactive shell: readline with completion and persistent history,
 * events shown the moment they arrive, prompts that say what input is
 * expected: `(QEMU) ` for a command, `TRANS> ` inside a transaction, `... `
 * while a JSON value is still open.
 *
 * Lines are handled one at a time, in order; a line typed while a command
 * runs waits its turn.
 */

import * as readline from 'node:readline';
import { completeLine } from './completion';
import { helpFor } from './help';
import { HISTORY_SIZE, loadHistory, saveHistory } from './history';
import { watchJobs } from './job-watch';
import { QmpConnectionError } from './qmp-client';
import { BUILTINS, BUILTIN_NAMES, EVENT_TAKING_BUILTINS, NAME_TAKING_BUILTINS } from './builtins';
import { ShellSession } from './session';
import { discardInput, printAbovePrompt } from './terminal';

export interface ReplOptions {
  input: NodeJS.ReadStream;
  output: NodeJS.WriteStream;
  historyFile: string;
}

export const PROMPT = '(QEMU) ';
export const TRANSACTION_PROMPT = 'TRANS> ';
export const CONTINUATION_PROMPT = '... ';

export function runRepl(session: ShellSession, options: ReplOptions): Promise<number> {
  const { input, output } = options;
  const rl = readline.createInterface({
    input,
    output,
    terminal: true,
    history: loadHistory(options.historyFile),
    historySize: HISTORY_SIZE,
    removeHistoryDuplicates: false,
    tabSize: 4,
    completer: (line: string, callback: (error: Error | null, result: [string[], string]) => void) => {
      completeLine(line, {
        schema: session.schema,
        builtins: BUILTIN_NAMES,
        nameTakingBuiltins: NAME_TAKING_BUILTINS,
        eventTakingBuiltins: EVENT_TAKING_BUILTINS,
        inTransaction: session.builder.inTransaction,
        nodeNames: () => session.names.nodeNames(),
        jobIds: () => session.names.jobIds(),
      }).then(
        (result) => callback(null, result),
        () => callback(null, [[], line]),
      );
    },
  });
  rl.on('history', (history: string[]) => saveHistory(options.historyFile, history));

  const queue: string[] = [];
  let busy = false;
  let watching = false;
  let closing = false;
  const heldBack: string[] = [];
  /** Ctrl-C while a wait-event runs stops the wait. */
  let interrupt: AbortController | undefined;

  const promptText = (): string =>
    session.assembler.continuing ? CONTINUATION_PROMPT : session.builder.inTransaction ? TRANSACTION_PROMPT : PROMPT;
  const prompt = (): void => {
    rl.setPrompt(promptText());
    rl.prompt();
  };
  /** Output that may arrive at any time (events). */
  const showAsync = (text: string): void => {
    if (watching) heldBack.push(text);
    else if (busy || closing) output.write(`${text}\n`);
    else printAbovePrompt(rl, output, text);
  };
  const show = (text: string): void => {
    output.write(`${text}\n`);
  };
  session.onEvent = (event) => showAsync(session.format(event));

  return new Promise<number>((resolve) => {
    let finished = false;
    const finish = (code: number): void => {
      if (finished) return;
      finished = true;
      closing = true;
      rl.close();
      resolve(code);
    };

    const handle = async (line: string): Promise<void> => {
      const outcome = session.interpret(line);
      switch (outcome.kind) {
        case 'nothing':
          return;
        case 'invalid':
          show(outcome.error);
          return;
        case 'command': {
          const reply = await session.execute(outcome.message, show);
          show(session.format(reply));
          return;
        }
        case 'builtin':
          await runBuiltin(outcome.name, outcome.words);
          return;
      }
    };

    const runBuiltin = async (name: string, words: string[]): Promise<void> => {
      switch (name) {
        case 'help':
          show(helpFor(session.schema, BUILTINS, words, output.columns ?? 80));
          return;
        case 'jobs':
        case 'watch-jobs':
          watching = true;
          try {
            await watchJobs(
              (command, args) => session.client.execute(command, args),
              (listener) => {
                session.client.on('event', listener);
                return () => session.client.off('event', listener);
              },
              input,
              output,
            );
          } finally {
            watching = false;
            for (const text of heldBack.splice(0)) show(text);
          }
          return;
        case 'wait-event': {
          interrupt = new AbortController();
          try {
            const result = await session.waitForEvent(words, interrupt.signal);
            if (typeof result === 'string') show(result);
          } finally {
            interrupt = undefined;
          }
          return;
        }
      }
    };

    const drain = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (queue.length > 0) await handle(queue.shift()!);
      } catch (error) {
        if (error instanceof QmpConnectionError || session.client.isClosed) return;
        show(`Error: ${(error as Error).message}`);
      } finally {
        busy = false;
      }
      if (closing) finish(0);
      else if (!session.client.isClosed) prompt();
    };

    rl.on('line', (line) => {
      queue.push(line);
      void drain();
    });
    rl.on('SIGINT', () => {
      if (busy) {
        interrupt?.abort();
        return;
      }
      rl.write(null, { ctrl: true, name: 'e' }); // to the end of the input, so ^C follows it
      output.write('^C\n');
      discardInput(rl);
      session.discardPendingInput();
      prompt();
    });
    rl.on('close', () => {
      if (finished) return;
      closing = true;
      output.write('\n');
      if (!busy) finish(0);
    });
    session.client.on('close', (error) => {
      if (finished) return;
      showAsync(error ? `Disconnected: ${error.message}` : 'Disconnected');
      finish(1);
    });
    prompt();
  });
}
