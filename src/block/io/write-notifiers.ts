/**
 * Write notifiers: what jobs hook into a node's write path in the I/O
 * layer. `before` runs before a write, zero or discard reaches the driver
 * (copy-before-write copies the old data out); `after` runs once it is done
 * (dirty tracking, write-blocking mirroring). Both run inside the request,
 * so a drained section waits for them as for the write itself.
 */
import type { IoNode } from './io-node';

export type WriteKind = 'write' | 'zero' | 'discard';

export interface WriteNotifier {
  before?(offset: number, bytes: number): Promise<void> | undefined;
  /** `data` is the written buffer for plain writes; `ok` whether the write succeeded. */
  after?(offset: number, bytes: number, kind: WriteKind, data: Buffer | undefined, ok: boolean): Promise<void> | undefined;
}

const byNode = new WeakMap<IoNode, WriteNotifier[]>();

/** Adds a notifier on `node`; returns the function that removes it. */
export function addWriteNotifier(node: IoNode, notifier: WriteNotifier): () => void {
  const list = byNode.get(node) ?? [];
  list.push(notifier);
  byNode.set(node, list);
  return () => {
    const l = byNode.get(node);
    if (!l) return;
    const i = l.indexOf(notifier);
    if (i >= 0) l.splice(i, 1);
    if (l.length === 0) byNode.delete(node);
  };
}

/** The notifiers of `node`, or undefined on the fast path (none). */
export function writeNotifiers(node: IoNode): WriteNotifier[] | undefined {
  return byNode.get(node);
}

export async function notifyBefore(list: WriteNotifier[], offset: number, bytes: number): Promise<void> {
  for (const n of list) await n.before?.(offset, bytes);
}

export async function notifyAfter(list: WriteNotifier[], offset: number, bytes: number, kind: WriteKind, data: Buffer | undefined, ok: boolean): Promise<void> {
  for (const n of list) await n.after?.(offset, bytes, kind, data, ok);
}
