/**
 * Runs main-loop operations one at a time, like QEMU's single QMP
 * dispatcher: a command that waits on an I/O context (a drain, an open)
 * finishes before the next command, from any monitor, starts. Job state
 * changes that touch the graph take the same queue.
 */
import { assertMainLoop } from '../common/thread-context';

let tail: Promise<unknown> = Promise.resolve();

export function runExclusive<T>(fn: () => Promise<T> | T): Promise<T> {
  assertMainLoop();
  const run = tail.then(fn, fn);
  tail = run.catch(() => undefined);
  return run;
}
