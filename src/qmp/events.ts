/**
 * Asynchronous QMP events: stamped with the time they happened and sent to
 * every monitor that has finished capability negotiation.
 */
import { assertMainLoop } from '../common/thread-context';

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp: { seconds: number; microseconds: number };
}

export interface EventSink {
  sendEvent(ev: QmpEvent): void;
}

const sinks = new Set<EventSink>();

export function addEventSink(sink: EventSink): void {
  sinks.add(sink);
}

export function removeEventSink(sink: EventSink): void {
  sinks.delete(sink);
}

export function emitEvent(event: string, data?: unknown): void {
  assertMainLoop();
  const now = Date.now() * 1000 + (Number(process.hrtime.bigint() / 1000n) % 1000);
  const ev: QmpEvent = { event, timestamp: { seconds: Math.floor(now / 1e6), microseconds: now % 1e6 } };
  if (data !== undefined) ev.data = data;
  for (const s of sinks) s.sendEvent(ev);
}
