/**
 * The block graph: node names and edges, and the permission rules that
 * every edge change must satisfy. Edge changes assert a drained section.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { PERM, permDescription } from '../common/permissions';
import * as proto from '../common/io-context-protocol';
import type { BdrvChild, BlockNode, GraphParent } from './block-node';
import { assertGraphWritable } from './drain';

const nodesByName = new Map<string, BlockNode>();
let autoNameCounter = 0;
/** Each node's place in creation order, which queries list nodes by. */
const creationOrder = new Map<string, number>();
let nextCreation = 0;

/** Nodes in creation order, oldest first. */
export function allNodes(): BlockNode[] {
  assertMainLoop();
  return [...nodesByName.values()].sort((a, b) => creationOrder.get(a.name)! - creationOrder.get(b.name)!);
}

/**
 * Fixes the place of a node being opened in creation order before it
 * exists: QEMU names a format node once its file is open and before its
 * backing chain, which therefore lists as newer.
 */
export function reserveCreationOrder(name: string): void {
  assertMainLoop();
  if (!creationOrder.has(name)) creationOrder.set(name, nextCreation++);
}

/** Gives back a reserved place whose node never came to exist. */
export function releaseCreationOrder(name: string): void {
  assertMainLoop();
  if (!nodesByName.has(name)) creationOrder.delete(name);
}

export function findNode(name: string): BlockNode | undefined {
  assertMainLoop();
  return nodesByName.get(name);
}

/** QEMU's lookup error for commands that take a node-name. */
export function requireNode(name: string): BlockNode {
  assertMainLoop();
  const node = nodesByName.get(name);
  if (!node) throw QmpError.generic(`Cannot find device='' nor node-name='${name}'`);
  return node;
}

export function nodeNameTaken(name: string): boolean {
  assertMainLoop();
  return nodesByName.has(name);
}

export function autoNodeName(): string {
  assertMainLoop();
  // QEMU's generated ids: a counter, then two random digits, so users cannot guess and squat them.
  let name: string;
  do name = `#block${autoNameCounter++}${String(Math.floor(Math.random() * 100)).padStart(2, '0')}`;
  while (nodesByName.has(name));
  return name;
}

export function registerNode(node: BlockNode): void {
  assertMainLoop();
  if (nodesByName.has(node.name)) throw QmpError.generic(`Duplicate nodes with node-name='${node.name}'`);
  reserveCreationOrder(node.name);
  nodesByName.set(node.name, node);
}

export function unregisterNode(node: BlockNode): void {
  assertMainLoop();
  if (node.parents.length > 0 || node.children.length > 0) throw new Error(`node ${node.name} still has edges`);
  nodesByName.delete(node.name);
  creationOrder.delete(node.name);
}

/** QEMU's words for a user of a node in permission conflicts (its get_parent_desc). */
function describeParent(p: GraphParent): string {
  if (p.kind === 'node') return `node '${p.name}'`;
  if (p.graphType === 'block-job') return `${p.jobType ?? 'block'} job '${p.name}'`;
  return p.name ? `block device '${p.name}'` : 'an unnamed block device';
}

/** QEMU's bdrv_a_allow_b() refusal: `b` takes permissions `denied` that `a` does not share (named as bdrv_perm_names() does). */
function conflict(child: BlockNode, denied: number, b: [GraphParent, string], a: [GraphParent, string]): QmpError {
  return QmpError.generic(
    `Permission conflict on node '${child.name}': permissions '${permDescription(denied).replace(/-/g, ' ')}' are both required by ${describeParent(b[0])} ` +
      `(uses node '${child.name}' as '${b[1]}' child) and unshared by ${describeParent(a[0])} (uses node '${child.name}' as '${a[1]}' child).`,
  );
}

/**
 * Checks that `perm`/`shared` wanted by a new or changed edge fit the other
 * users of `child`, in QEMU's order: the newest user (this edge) is asked
 * first whether it lets each other one be, then each other one whether it
 * lets this edge be.
 */
function checkPermConflicts(child: BlockNode, edge: BdrvChild | undefined, parent: GraphParent, role: string, perm: number, shared: number): void {
  // As in QEMU, only writing needs a writable node: a resize is refused later, by the truncate itself.
  if (perm & PERM.WRITE && child.readOnly) {
    throw QmpError.generic(`Block node is read-only`);
  }
  const others = child.parents.filter((o) => o !== edge);
  for (const other of others) {
    const deniedByNew = other.perm & ~shared;
    if (deniedByNew) throw conflict(child, deniedByNew, [other.parent, other.role], [parent, role]);
  }
  for (const other of others) {
    const deniedByOther = perm & ~other.shared;
    if (deniedByOther) throw conflict(child, deniedByOther, [parent, role], [other.parent, other.role]);
  }
}

/** Recomputes the permissions `node` takes on its children after its own changed, down the graph. */
export function refreshPerms(node: BlockNode): void {
  assertMainLoop();
  const { perm, shared } = node.cumulativePerms();
  node.driver.setPerms?.(node, perm, shared);
  for (const edge of node.children) {
    const want = node.driver.childPerms(node, edge.role, perm, shared);
    if (want.perm === edge.perm && want.shared === edge.shared) continue;
    checkPermConflicts(edge.child, edge, node, edge.role, want.perm, want.shared);
    edge.perm = want.perm;
    edge.shared = want.shared;
    refreshPerms(edge.child);
  }
}

/** Adds the edge parent → child; the caller drains `child` (and `parent`, when it is a node). */
export function attachChild(parent: GraphParent, child: BlockNode, role: string, perms?: { perm: number; shared: number }): BdrvChild {
  assertGraphWritable(child, ...(parent.kind === 'node' ? [parent] : []));
  let want = perms;
  if (!want) {
    if (parent.kind !== 'node') throw new Error('a backend parent states its permissions');
    const cum = parent.cumulativePerms();
    want = parent.driver.childPerms(parent, role, cum.perm, cum.shared);
  }
  checkPermConflicts(child, undefined, parent, role, want.perm, want.shared);
  const edge: BdrvChild = { role, parent, child, perm: want.perm, shared: want.shared };
  child.parents.push(edge);
  if (parent.kind === 'node') parent.children.push(edge);
  try {
    refreshPerms(child);
  } catch (err) {
    // A permission the graph below refused (an image lock another process holds): undo the edge.
    child.parents.splice(child.parents.indexOf(edge), 1);
    if (parent.kind === 'node') parent.children.splice(parent.children.indexOf(edge), 1);
    refreshPerms(child);
    throw err;
  }
  return edge;
}

export function detachChild(edge: BdrvChild): void {
  assertGraphWritable(edge.child, ...(edge.parent.kind === 'node' ? [edge.parent] : []));
  const i = edge.child.parents.indexOf(edge);
  if (i >= 0) edge.child.parents.splice(i, 1);
  if (edge.parent.kind === 'node') {
    const j = edge.parent.children.indexOf(edge);
    if (j >= 0) edge.parent.children.splice(j, 1);
  }
  refreshPerms(edge.child);
}

/** Sends the node's children to its I/O context, so its view matches the GS graph. */
export async function syncChildren(node: BlockNode): Promise<void> {
  assertGraphWritable(node);
  await node.ctx.channel.request(proto.setChildren, {
    nodeName: node.name,
    children: node.children.map((c) => ({ role: c.role, node: c.child.name })),
  });
}


/**
 * Moves the parents of `from` over to `to`, as QEMU's bdrv_replace_node:
 * each edge keeps its role and its parent's permissions, and stays the same
 * object, so whoever holds it (an export, a job) follows the move. Edges
 * for which `keep` says true stay. The caller drains both nodes and then
 * sends the moved node parents their new children (`syncChildren`).
 * Returns the moved edges.
 */
export function replaceNode(from: BlockNode, to: BlockNode, keep: (edge: BdrvChild) => boolean = () => false): BdrvChild[] {
  assertGraphWritable(from, to);
  const moved: BdrvChild[] = [];
  const moveEdge = (edge: BdrvChild, target: BlockNode): void => {
    edge.child.parents.splice(edge.child.parents.indexOf(edge), 1);
    edge.child = target;
    target.parents.push(edge);
  };
  try {
    for (const edge of [...from.parents]) {
      if (edge.parent === to || keep(edge)) continue;
      checkPermConflicts(to, undefined, edge.parent, edge.role, edge.perm, edge.shared);
      moveEdge(edge, to);
      moved.push(edge);
    }
    refreshPerms(to);
  } catch (err) {
    // Put the edges back as they were, so a refused replacement changes nothing.
    for (const edge of [...moved].reverse()) moveEdge(edge, from);
    refreshPerms(to);
    throw err;
  }
  refreshPerms(from);
  return moved;
}
