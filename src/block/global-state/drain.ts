/**
 * Drained sections: before the graph changes, the affected nodes stop
 * admitting new requests and their in-flight requests finish, in every I/O
 * context involved. Graph writes assert they run inside one.
 */
import { assertMainLoop } from '../../common/thread-context';
import * as proto from '../common/io-context-protocol';
import type { BlockNode } from './block-node';
import type { IoContext } from './io-context';

export class GraphNotDrained extends Error {
  readonly code = 'QBD_GRAPH_NOT_DRAINED';
}

/** The nodes a drain of `nodes` quiesces on the GS side: the nodes and their ancestors. */
function quiesceSet(nodes: BlockNode[]): Set<BlockNode> {
  const out = new Set<BlockNode>();
  const up = (n: BlockNode): void => {
    if (out.has(n)) return;
    out.add(n);
    for (const p of n.parents) if (p.parent.kind === 'node') up(p.parent);
  };
  nodes.forEach(up);
  return out;
}

function byContext(nodes: Iterable<BlockNode>): Map<IoContext, BlockNode[]> {
  const map = new Map<IoContext, BlockNode[]>();
  for (const n of nodes) {
    if (!n.attached) continue;
    const list = map.get(n.ctx) ?? [];
    list.push(n);
    map.set(n.ctx, list);
  }
  return map;
}

/** What a drained section entered, so that its end leaves exactly that. */
export interface DrainToken {
  readonly section: number;
  /** The nodes quiesced on the GS side: those drained and their ancestors at the time. */
  readonly quiesced: BlockNode[];
  /** The contexts that entered the section. */
  readonly entered: IoContext[];
}

let nextSection = 1;

export async function drainedBegin(nodes: BlockNode[]): Promise<DrainToken> {
  assertMainLoop();
  const quiesced = [...quiesceSet(nodes)];
  for (const n of quiesced) n.quiesce++;
  const section = nextSection++;
  const byCtx = byContext(nodes);
  await Promise.all([...byCtx].map(([ctx, list]) => ctx.channel.request(proto.drainBegin, { section, nodes: list.map((n) => n.name) })));
  return { section, quiesced, entered: [...byCtx.keys()] };
}

export async function drainedEnd(token: DrainToken): Promise<void> {
  assertMainLoop();
  for (const n of token.quiesced) n.quiesce--;
  await Promise.all(token.entered.map((ctx) => ctx.channel.request(proto.drainEnd, { section: token.section })));
}

/** Runs `fn` with `nodes` drained. */
export async function drained<T>(nodes: BlockNode[], fn: () => Promise<T> | T): Promise<T> {
  assertMainLoop();
  const token = await drainedBegin(nodes);
  try {
    return await fn();
  } finally {
    await drainedEnd(token);
  }
}
/** The counterpart of QEMU's "graph writable": every edge change calls this first. */
export function assertGraphWritable(...nodes: BlockNode[]): void {
  assertMainLoop();
  for (const n of nodes) {
    if (n.quiesce <= 0) throw new GraphNotDrained(`graph change on node ${n.name} outside a drained section`);
  }
}
