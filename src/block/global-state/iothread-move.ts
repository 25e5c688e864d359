/**
 * x-blockdev-set-iothread: moving a node to another I/O context. Nodes that
 * share edges must share a context, so the whole connected part of the
 * graph moves: drained, its I/O halves detached (caches written back) from
 * the old context and rebuilt from descriptors in the new one.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import type { NodeStatsReport } from '../common/node-stats';
import type { BlockNode } from './block-node';
import { descriptorOf } from './blockdev';
import { drainedBegin, drainedEnd } from './drain';
import type { IoContext } from './io-context';

/** The nodes connected to `node` by edges, in both directions. */
function connected(node: BlockNode): BlockNode[] {
  const seen = new Set<BlockNode>();
  const visit = (n: BlockNode): void => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const c of n.children) visit(c.child);
    for (const p of n.parents) if (p.parent.kind === 'node') visit(p.parent);
  };
  visit(node);
  return [...seen];
}

/** Children before parents: the order in which I/O halves can be rebuilt. */
function bottomUp(nodes: BlockNode[]): BlockNode[] {
  const out: BlockNode[] = [];
  const done = new Set<BlockNode>();
  const visit = (n: BlockNode): void => {
    if (done.has(n)) return;
    done.add(n);
    for (const c of n.children) visit(c.child);
    out.push(n);
  };
  nodes.forEach(visit);
  return out;
}

export async function moveToContext(node: BlockNode, target: IoContext, force: boolean): Promise<void> {
  assertMainLoop();
  const group = connected(node);
  const backendUser = group.flatMap((n) => n.parents).find((p) => p.parent.kind === 'backend');
  if (backendUser && !force) {
    throw QmpError.generic(`Node ${node.name} is associated with a BlockBackend and could be in use (use force=true to override this check)`);
  }
  if (group.every((n) => n.ctx === target)) return;
  const order = bottomUp(group);
  const token = await drainedBegin(group);
  // The I/O counters (query-blockstats) belong to the node, not to the context: they move with it.
  const stats = new Map<BlockNode, NodeStatsReport>();
  try {
    for (const n of [...order].reverse()) {
      stats.set(n, await n.ctx.channel.request(proto.detachNode, { nodeName: n.name }));
      n.ctx.nodes.delete(n.name);
      n.attached = false;
    }
    for (const n of order) {
      n.ctx = target;
      await target.channel.request(proto.attachNode, { ...descriptorOf(n), stats: stats.get(n) });
      n.attached = true;
      target.nodes.add(n.name);
    }
  } finally {
    await drainedEnd(token);
  }
}
