/**
 * The live job view: polls `query-jobs`, redraws the job lines in place, and
 * stops when a key is pressed or no job is moving any more.
 *
 * While the view runs it owns the keyboard: readline's keypress listeners are
 * set aside and put back afterwards, so the key that stops the view does not
 * land in the input line.
 */

import * as readline from 'node:readline';
import { Execute, QmpEvent, QmpReply, isErrorReply } from './qmp-client';
import { JobBoard, JobInfo, jobsSettled } from './job-view';

/** Registers an event listener; returns the function that removes it. */
export type SubscribeEvents = (listener: (event: QmpEvent) => void) => () => void;

export interface JobWatchOptions {
  intervalMs?: number;
}

export type WatchEnd = 'key' | 'settled' | 'error';

const DEFAULT_INTERVAL_MS = 250;

type KeypressListener = (...args: unknown[]) => void;

export async function watchJobs(
  execute: Execute,
  subscribe: SubscribeEvents,
  input: NodeJS.ReadStream,
  output: NodeJS.WriteStream,
  options: JobWatchOptions = {},
): Promise<WatchEnd> {
  const interval = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const board = new JobBoard();
  const unsubscribe = subscribe((event) => board.applyEvent(event));
  const saved = input.listeners('keypress') as KeypressListener[];
  for (const listener of saved) input.removeListener('keypress', listener);
  let keyPressed = false;
  let wake: (() => void) | undefined;
  const onKey = (): void => {
    keyPressed = true;
    wake?.();
  };
  input.on('keypress', onKey);
  input.resume();
  let drawn = 0;
  try {
    for (;;) {
      const reply = await execute('query-jobs');
      if (isErrorReply(reply)) {
        output.write(`query-jobs failed: ${reply.error.desc}\n`);
        return 'error';
      }
      board.applyPoll(reply.return as JobInfo[], Date.now());
      const settled = board.settled;
      const columns = output.columns ?? 80;
      const footer = settled
        ? 'No job is running.'
        : keyPressed
          ? 'Stopped watching; the jobs go on.'
          : 'Watching jobs; press any key to stop.';
      const lines = [...board.render(columns), footer];
      if (drawn > 0) readline.moveCursor(output, 0, -drawn);
      readline.cursorTo(output, 0);
      readline.clearScreenDown(output);
      output.write(`${lines.join('\n')}\n`);
      drawn = lines.length;
      if (settled) return 'settled';
      if (keyPressed) return 'key';
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, interval);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    unsubscribe();
    input.removeListener('keypress', onKey);
    for (const listener of saved) input.on('keypress', listener);
  }
}

/** For scripts: waits until no job is moving, then returns the last `query-jobs` reply. */
export async function waitForJobs(execute: Execute, options: JobWatchOptions = {}): Promise<QmpReply> {
  const interval = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  for (;;) {
    const reply = await execute('query-jobs');
    if (isErrorReply(reply) || jobsSettled(reply.return as JobInfo[])) return reply;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}
