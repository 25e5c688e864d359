/**
 * The registry of I/O contexts: the default one, and one per iothread
 * object, started when the object is added.
 */
import { assertMainLoop } from '../../common/thread-context';
import { IoContext } from './io-context';

let defaultContext: IoContext | undefined;
const byIothread = new Map<string, IoContext>();

export function getDefaultContext(): IoContext {
  assertMainLoop();
  defaultContext ??= new IoContext(undefined);
  return defaultContext;
}

export function addIothreadContext(id: string): IoContext {
  assertMainLoop();
  const ctx = new IoContext(id);
  byIothread.set(id, ctx);
  return ctx;
}

export function findIothreadContext(id: string): IoContext | undefined {
  assertMainLoop();
  return byIothread.get(id);
}

/** Stops an iothread's context; the caller has checked that no node lives there. */
export async function removeIothreadContext(id: string): Promise<void> {
  assertMainLoop();
  const ctx = byIothread.get(id);
  if (!ctx) return;
  byIothread.delete(id);
  await ctx.stop();
}

export async function stopAllContexts(): Promise<void> {
  assertMainLoop();
  const all = [...byIothread.values()];
  if (defaultContext) all.push(defaultContext);
  byIothread.clear();
  defaultContext = undefined;
  await Promise.all(all.map((c) => c.stop()));
}
