/**
 * The internal filter node a block job puts above its source (mirror_top,
 * copy-before-write): inserted so that it takes over the source's parents,
 * removed again when the job ends, each time inside a drained section of
 * the nodes involved. Mirror's pivot hands the filter's parents to the
 * target instead of back to the source.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import * as proto from '../block/common/io-context-protocol';
import { BlockNode } from '../block/global-state/block-node';
import { descriptorOf } from '../block/global-state/blockdev';
import { drained } from '../block/global-state/drain';
import type { GsDriver } from '../block/global-state/driver-gs';
import { attachChild, autoNodeName, detachChild, findNode, nodeNameTaken, registerNode, replaceNode, syncChildren, unregisterNode } from '../block/global-state/graph';
import type { BdrvChild } from '../block/global-state/block-node';

export interface FilterSpec {
  /** filter-node-name, or undefined for an automatic `#blockN` name. */
  name: string | undefined;
  driver: GsDriver;
  source: BlockNode;
  /** The filter's children: the source in `sourceRole`, and any others (copy-before-write's target). */
  sourceRole: string;
  others: Array<{ role: string; node: BlockNode }>;
}

/** QEMU's bdrv_lookup_bs(name, name): a job's device or target is a device name or a node name. */
export function lookupNode(name: string): BlockNode {
  assertMainLoop();
  const node = findNode(name);
  if (!node) throw QmpError.generic(`Cannot find device='${name}' nor node-name='${name}'`);
  return node;
}

/** QEMU's duplicate-name check for filter-node-name, made before anything changes. */
export function checkFilterName(name: string | undefined): void {
  assertMainLoop();
  if (name !== undefined && nodeNameTaken(name)) throw QmpError.generic(`Duplicate nodes with node-name='${name}'`);
}

function newFilterNode(spec: FilterSpec): BlockNode {
  const { source } = spec;
  const options: Record<string, unknown> = { driver: spec.driver.descriptor.name, [spec.sourceRole]: source.name };
  for (const o of spec.others) options[o.role] = o.node.name;
  return new BlockNode(
    spec.name ?? autoNodeName(),
    spec.name === undefined,
    false,
    spec.driver,
    options,
    { ...source.common, readOnly: false, autoReadOnly: false, forceShare: false, discard: 'unmap', detectZeroes: 'off' },
    undefined,
    source.length,
    source.ctx,
    false,
    source.requestAlignment,
    source.maxTransfer,
  );
}

/**
 * Parents that are not nodes (exports) keep their edge on the source: their
 * data path in the I/O context stays on the node they opened, and the job's
 * write notifiers on the source see their writes all the same.
 */
const stays = (edge: BdrvChild): boolean => edge.parent.kind === 'backend';

/** Sends new children to node parents whose edges moved. */
async function syncParents(edges: BdrvChild[]): Promise<void> {
  const parents = new Set<BlockNode>();
  for (const e of edges) if (e.parent.kind === 'node') parents.add(e.parent);
  for (const p of parents) await syncChildren(p);
}

/**
 * Inserts the filter above `spec.source` with `nodes` drained, then runs
 * `inside` (the job's own edges, arming the run half) in the same section.
 * On failure nothing of it stays.
 */
export async function insertFilter(spec: FilterSpec, nodes: BlockNode[], inside: (filter: BlockNode) => Promise<void>): Promise<BlockNode> {
  assertMainLoop();
  const filter = newFilterNode(spec);
  await drained(nodes, async () => {
    registerNode(filter);
    // The new node is covered by this section as well.
    filter.quiesce++;
    const own: BdrvChild[] = [];
    let moved: BdrvChild[] = [];
    try {
      moved = replaceNode(spec.source, filter, stays);
      own.push(attachChild(filter, spec.source, spec.sourceRole));
      for (const o of spec.others) own.push(attachChild(filter, o.node, o.role));
      await filter.ctx.channel.request(proto.attachNode, descriptorOf(filter));
      filter.attached = true;
      filter.ctx.nodes.add(filter.name);
      await syncParents(moved);
      await inside(filter);
    } catch (err) {
      if (filter.attached) {
        // Parents first: they must not point at the filter when it leaves the I/O context.
        const back = replaceNode(filter, spec.source);
        await syncParents(back);
        await filter.ctx.channel.request(proto.detachNode, { nodeName: filter.name }).catch(() => undefined);
        filter.attached = false;
        filter.ctx.nodes.delete(filter.name);
      } else if (moved.length > 0) {
        replaceNode(filter, spec.source);
      }
      for (const e of own) detachChild(e);
      filter.quiesce--;
      unregisterNode(filter);
      throw err;
    }
    filter.quiesce--;
  });
  return filter;
}

/**
 * Removes the filter with its nodes drained: its parents go to `heir` (the
 * source, or the target after mirror's pivot), `inside` runs first in the
 * same section (mirror's final copy, dropping the job's edges).
 */
export async function removeFilter(filter: BlockNode, heir: BlockNode, others: BlockNode[], inside: () => Promise<void>): Promise<void> {
  assertMainLoop();
  const nodes = [...new Set([filter, heir, ...others, ...filter.children.map((c) => c.child)])];
  await drained(nodes, async () => {
    await inside();
    const moved = replaceNode(filter, heir, (e) => e.parent.kind === 'backend' && e.parent.graphType === 'block-job');
    await syncParents(moved);
    if (filter.attached) {
      await filter.ctx.channel.request(proto.detachNode, { nodeName: filter.name });
      filter.attached = false;
      filter.ctx.nodes.delete(filter.name);
    }
    for (const e of [...filter.children]) detachChild(e);
  });
  unregisterNode(filter);
}
