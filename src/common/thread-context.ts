/**
 * Which world a piece of code runs in.
 *
 * Global-state (GS) code runs only on the main thread: the main loop that owns
 * the block graph, jobs' control state, exports and monitors. I/O code runs in
 * I/O contexts (worker threads). GS functions start with `assertMainLoop()`;
 * the check is cheap and always on.
 */
import { isMainThread, threadId } from 'node:worker_threads';

export class ContextViolation extends Error {
  readonly code = 'QBD_CONTEXT_VIOLATION';
}

/** First line of every GS function: throws when called from an I/O context. */
export function assertMainLoop(): void {
  if (!isMainThread) {
    throw new ContextViolation(`global-state code called from I/O context (thread ${threadId})`);
  }
}

/** First line of I/O-context entry points that must never run on the main thread. */
export function assertIoContext(): void {
  if (isMainThread) {
    throw new ContextViolation('I/O-context code called on the main loop');
  }
}

export function inMainLoop(): boolean {
  return isMainThread;
}
