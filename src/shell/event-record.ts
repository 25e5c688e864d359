/**
 * Recent events, and waiting for one (`wait-event EVENT key=value…`).
 *
 * A wait looks first at the events received since the previous wait
 * returned, so an event that arrives between a command's reply and the
 * `wait-event` line after it is not missed.
 */

import { formatJson } from './json-text';
import { QmpEvent } from './qmp-client';
import { RawObject, RawValue, parseArguments } from './syntax';

const RECORD_LIMIT = 1000;
const DEFAULT_WAIT_SECONDS = 30;

export class EventRecord {
  private readonly events: QmpEvent[] = [];
  private consumed = 0;
  private readonly waiters = new Set<() => void>();

  record(event: QmpEvent): void {
    this.events.push(event);
    if (this.events.length > RECORD_LIMIT) {
      const drop = this.events.length - RECORD_LIMIT;
      this.events.splice(0, drop);
      this.consumed = Math.max(0, this.consumed - drop);
    }
    for (const wake of [...this.waiters]) wake();
  }

  /**
   * `words` are `EVENT [key=value…] [timeout=SECONDS]`. Resolves with the
   * matching event, or with the reason there is none (timeout, abort, bad
   * words). `gone()` tells when waiting longer is pointless (disconnected).
   */
  async waitFor(words: readonly string[], gone: () => boolean, signal?: AbortSignal): Promise<QmpEvent | string> {
    const [name, ...rest] = words;
    if (name === undefined) return 'wait-event needs an event name';
    let filter: RawObject;
    try {
      filter = parseArguments(rest);
    } catch (error) {
      return (error as Error).message;
    }
    let seconds = DEFAULT_WAIT_SECONDS;
    const timeout = filter.members.get('timeout');
    if (timeout !== undefined) {
      seconds = Number(textOf(timeout));
      if (!Number.isFinite(seconds) || seconds < 0) return `bad timeout '${textOf(timeout)}'`;
      filter.members.delete('timeout');
    }
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      while (this.consumed < this.events.length) {
        const event = this.events[this.consumed++]!;
        if (event.event === name && matches(event.data ?? {}, filter)) return event;
      }
      const remaining = deadline - Date.now();
      if (signal?.aborted) return `stopped waiting for ${name}`;
      if (remaining <= 0 || gone()) return `timed out waiting for ${name}`;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, remaining);
        this.waiters.add(done);
        signal?.addEventListener('abort', done);
      });
    }
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
