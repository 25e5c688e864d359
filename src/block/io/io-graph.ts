/**
 * One I/O context's view of the graph: the I/O halves of the nodes that live
 * here and the edges between them. Changed only by messages from the main
 * loop, which sends them inside drained sections.
 */
import type { ChildLink, IoNodeDescriptor } from '../common/node-descriptor';
import type { NodeStatsReport } from '../common/node-stats';
import { setDirtyBitmaps } from './dirty-tracking';
import { ioDrivers } from './driver-table';
import { IoNode } from './io-node';
import { nodeStatsReport } from './node-stats';
import { flushNode } from './request';

export class IoGraph {
  readonly nodes = new Map<string, IoNode>();

  get(name: string): IoNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`node ${name} is not in this I/O context`);
    return node;
  }

  attach(desc: IoNodeDescriptor): void {
    if (this.nodes.has(desc.nodeName)) throw new Error(`node ${desc.nodeName} is already attached`);
    const driver = ioDrivers.get(desc.driver);
    if (!driver) throw new Error(`no I/O driver ${desc.driver}`);
    const node = new IoNode(desc, driver);
    setDirtyBitmaps(node, desc.dirtyBitmaps);
    this.nodes.set(node.name, node);
    this.link(node, desc.children);
  }

  /** Answers the node's counters as they ended, for the context it moves to. */
  async detach(name: string): Promise<NodeStatsReport> {
    const node = this.get(name);
    if (node.parents.size > 0) throw new Error(`node ${name} still has parents in its I/O context`);
    try {
      if (!node.readOnly) await flushNode(node);
      await node.driver.detach?.(node);
    } finally {
      this.unlink(node);
      this.nodes.delete(name);
    }
    return nodeStatsReport(node);
  }

  setChildren(name: string, links: ChildLink[]): void {
    const node = this.get(name);
    this.unlink(node);
    this.link(node, links);
  }

  /** The node, its ancestors and its descendants: what a drain of `node` must wait for. */
  drainSet(node: IoNode, into = new Set<IoNode>()): Set<IoNode> {
    const up = (n: IoNode): void => {
      if (into.has(n)) return;
      into.add(n);
      for (const p of n.parents) up(p);
    };
    const down = (n: IoNode): void => {
      for (const c of n.children.values()) {
        if (!into.has(c)) {
          into.add(c);
          down(c);
        }
      }
    };
    up(node);
    down(node);
    return into;
  }

  private link(node: IoNode, links: ChildLink[]): void {
    for (const l of links) {
      const child = this.get(l.node);
      node.children.set(l.role, child);
      child.parents.add(node);
    }
  }

  private unlink(node: IoNode): void {
    for (const c of node.children.values()) c.parents.delete(node);
    node.children.clear();
  }
}
