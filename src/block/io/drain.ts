/**
 * Drained sections on the I/O side. Draining a node quiesces it and its
 * ancestors, so entry points (backends of exports and jobs) hold new
 * requests, and waits until nothing is in flight on the node, its ancestors
 * and its descendants. Requests already inside the graph finish normally.
 */
import type { IoGraph } from './io-graph';
import type { IoNode } from './io-node';

let waiters: Array<() => void> = [];

/** Resolves once `node` is no longer quiesced; the fast path is synchronous. */
export function waitWhileQuiesced(node: IoNode): Promise<void> | undefined {
  if (node.quiesce === 0) return undefined;
  return new Promise<void>((resolve) => {
    const retry = (): void => {
      if (node.quiesce === 0) resolve();
      else waiters.push(retry);
    };
    waiters.push(retry);
  });
}

function quiesceTargets(graph: IoGraph, names: string[]): IoNode[] {
  const out = new Set<IoNode>();
  for (const name of names) {
    const node = graph.get(name);
    const up = (n: IoNode): void => {
      if (out.has(n)) return;
      out.add(n);
      for (const p of n.parents) up(p);
    };
    up(node);
  }
  return [...out];
}

/** Nodes each open drained section quiesced, by section id. */
const sections = new Map<number, IoNode[]>();

export async function drainBegin(graph: IoGraph, section: number, names: string[]): Promise<void> {
  const quiesced = quiesceTargets(graph, names);
  sections.set(section, quiesced);
  for (const n of quiesced) n.quiesce++;
  const busy = new Set<IoNode>();
  for (const name of names) graph.drainSet(graph.get(name), busy);
  for (const n of busy) {
    while (n.inFlight > 0) await new Promise<void>((resolve) => n.idleWaiters.push(resolve));
  }
  // Let the replies of the requests that just finished leave before the drain is acknowledged.
  await new Promise<void>((resolve) => setImmediate(resolve));
}

export function drainEnd(section: number): void {
  const quiesced = sections.get(section);
  if (!quiesced) throw new Error(`drain end of unknown section ${section}`);
  sections.delete(section);
  for (const n of quiesced) n.quiesce--;
  const woken = waiters;
  waiters = [];
  for (const w of woken) w();
}
