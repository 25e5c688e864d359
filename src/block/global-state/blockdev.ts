/**
 * Opening and deleting nodes: blockdev-add / --blockdev and blockdev-del.
 * A node is opened children first; its edges are added inside a drained
 * section of the children, and its I/O half is attached in the I/O context
 * the children live in (or the default one).
 */
import { assertMainLoop } from '../../common/thread-context';
import { log } from '../../common/log';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import type { IoNodeDescriptor } from '../common/node-descriptor';
import { BlockNode, type NodeCommonOptions } from './block-node';
import { adoptStoredBitmaps, bitmapStates } from './dirty-bitmaps';
import { drained } from './drain';
import type { OpenContext } from './driver-gs';
import { gsDrivers } from './driver-table';
import { allNodes, attachChild, autoNodeName, detachChild, findNode, nodeNameTaken, registerNode, releaseCreationOrder, reserveCreationOrder, unregisterNode } from './graph';
import type { IoContext } from './io-context';
import { getDefaultContext } from './io-contexts';

/** Options a child opened inline inherits from its parent unless it sets them (QEMU's bdrv_inherited_options). */
const INHERITED = ['read-only', 'auto-read-only', 'force-share', 'discard', 'cache'] as const;

const COMMON_KEYS = new Set(['driver', 'node-name', 'discard', 'cache', 'read-only', 'auto-read-only', 'force-share', 'detect-zeroes']);

/** QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. */
function checkNodeName(name: string): void {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(name)) throw QmpError.generic(`Invalid node-name: '${name}'`);
  if (name.length > 31) throw QmpError.generic(`Node name too long`);
}

function commonOptions(options: Record<string, unknown>): NodeCommonOptions {
  const cache = (options.cache ?? {}) as { direct?: boolean; 'no-flush'?: boolean };
  const common: NodeCommonOptions = {
    readOnly: options['read-only'] === true,
    autoReadOnly: options['auto-read-only'] === true,
    forceShare: options['force-share'] === true,
    discard: options.discard === 'unmap' ? 'unmap' : 'ignore',
    detectZeroes: (options['detect-zeroes'] as NodeCommonOptions['detectZeroes']) ?? 'off',
    cacheDirect: cache.direct === true,
    cacheNoFlush: cache['no-flush'] === true,
  };
  if (common.detectZeroes === 'unmap' && common.discard !== 'unmap') {
    throw QmpError.generic('setting detect-zeroes to unmap is not allowed without setting discard operation to unmap');
  }
  if (common.forceShare && !common.readOnly) {
    throw QmpError.generic('force-share=on can only be used with read-only images');
  }
  return common;
}

function inherit(child: Record<string, unknown>, parent: Record<string, unknown>): Record<string, unknown> {
  const out = { ...child };
  for (const key of INHERITED) {
    if (out[key] === undefined && parent[key] !== undefined) out[key] = parent[key];
  }
  return out;
}

interface OpenState {
  /** Nodes opened inline by this call, to close again if a later step fails. */
  created: BlockNode[];
}

/** Opens the node described by `options` and everything it defines inline. */
async function openNode(options: Record<string, unknown>, isRoot: boolean, st: OpenState, monitorOwned = isRoot): Promise<BlockNode> {
  const driverName = String(options.driver);
  const driver = gsDrivers.get(driverName);
  if (!driver) throw QmpError.generic(`Parameter 'driver' does not accept value '${driverName}'`);

  let name = options['node-name'] as string | undefined;
  if (name === undefined) {
    if (isRoot) throw QmpError.generic(`'node-name' must be specified for the root node`);
    name = autoNodeName();
  } else {
    checkNodeName(name);
    if (nodeNameTaken(name)) throw QmpError.generic(`Duplicate nodes with node-name='${name}'`);
  }
  const common = commonOptions(options);

  const children: Array<{ role: string; node: BlockNode }> = [];
  const recorded: Record<string, unknown> = {};
  const ctx: OpenContext = {
    nodeName: name,
    readOnly: common.readOnly,
    cacheDirect: common.cacheDirect,
    async openChild(option, role, required) {
      // Children other than the file open after the node has its place (see reserveCreationOrder).
      if (role !== 'file') reserveCreationOrder(name);
      const ref = options[option];
      let child: BlockNode;
      if (ref === undefined || ref === null) {
        if (required) throw QmpError.generic(`A block device must be specified for "${option}"`);
        return undefined;
      } else if (typeof ref === 'string') {
        const found = findNode(ref);
        if (!found) throw QmpError.generic(`Cannot find device='${ref}' nor node-name='${ref}'`);
        child = found;
      } else {
        child = await openNode(inherit(ref as Record<string, unknown>, options), false, st);
      }
      recorded[option] = child.name;
      children.push({ role, node: child });
      return child;
    },
    childRequest: (child, request) => child.ctx.channel.request(proto.nodeRequest, { nodeName: child.name, request }),
  };

  let opened: Awaited<ReturnType<typeof driver.open>>;
  try {
    opened = await driver.open(ctx, options);
  } catch (err) {
    releaseCreationOrder(name);
    throw err;
  }
  const ioCtx = pickContext(children.map((c) => c.node));
  const driverOptions: Record<string, unknown> = { driver: driverName };
  for (const [k, v] of Object.entries(options)) {
    if (!COMMON_KEYS.has(k) && !(k in recorded)) driverOptions[k] = v;
  }
  Object.assign(driverOptions, recorded);

  const node = new BlockNode(
    name,
    options['node-name'] === undefined,
    monitorOwned,
    driver,
    driverOptions,
    common,
    opened.state,
    opened.length,
    ioCtx,
    opened.readOnly ?? common.readOnly,
    opened.requestAlignment ?? 1,
    opened.maxTransfer ?? 0,
  );
  try {
    registerNode(node);
  } catch (err) {
    await driver.close?.(node);
    throw err;
  }
  st.created.push(node);
  adoptStoredBitmaps(node);

  await drained([node, ...children.map((c) => c.node)], async () => {
    for (const c of children) attachChild(node, c.node, c.role);
    await ioCtx.channel.request(proto.attachNode, descriptorOf(node));
    node.attached = true;
    ioCtx.nodes.add(node.name);
  });
  return node;
}

/** A node lives in its children's I/O context; a node without children in the default one. */
function pickContext(children: BlockNode[]): IoContext {
  const contexts = new Set(children.map((c) => c.ctx));
  if (contexts.size > 1) throw QmpError.generic('Cannot combine nodes from different iothreads');
  return contexts.values().next().value ?? getDefaultContext();
}

export function descriptorOf(node: BlockNode): IoNodeDescriptor {
  return {
    nodeName: node.name,
    driver: node.driver.descriptor.name,
    state: node.state,
    children: node.children.map((c) => ({ role: c.role, node: c.child.name })),
    length: node.length,
    readOnly: node.readOnly,
    requestAlignment: node.requestAlignment,
    maxTransfer: node.maxTransfer,
    detectZeroes: node.common.detectZeroes,
    discard: node.common.discard,
    dirtyBitmaps: bitmapStates(node),
    writeThreshold: node.writeThreshold,
  };
}

/**
 * blockdev-add: opens a node tree; on failure nothing of it stays behind.
 * Nodes the graph opens for itself (a snapshot's new overlay) are not
 * `monitorOwned`: they go when their last user does.
 */
export async function blockdevAdd(options: Record<string, unknown>, monitorOwned = true): Promise<BlockNode> {
  assertMainLoop();
  const st: OpenState = { created: [] };
  try {
    return await openNode(options, true, st, monitorOwned);
  } catch (err) {
    for (const node of st.created.reverse()) {
      // Closing a parent already closed the inline children it owned.
      if (findNode(node.name) !== node) continue;
      await closeNode(node).catch((e: Error) => log.error({ node: node.name, err: e.message }, 'rollback of blockdev-add failed'));
    }
    throw err;
  }
}

/**
 * Opens a node tree that no monitor owns, with an automatic name (the
 * target a drive-backup or drive-mirror opens by filename); on failure
 * nothing of it stays behind. Its user closes it with `closeImplicitNode`.
 */
export async function openImplicitNode(options: Record<string, unknown>): Promise<BlockNode> {
  assertMainLoop();
  const st: OpenState = { created: [] };
  try {
    return await openNode(options, false, st);
  } catch (err) {
    for (const node of st.created.reverse()) {
      if (findNode(node.name) !== node) continue;
      await closeNode(node).catch((e: Error) => log.error({ node: node.name, err: e.message }, 'rollback of an implicit node failed'));
    }
    throw err;
  }
}

/** Closes an implicit node once its user is gone (it stays while something else uses it). */
export async function closeImplicitNode(node: BlockNode): Promise<void> {
  assertMainLoop();
  if (node.monitorOwned || node.parents.length > 0 || findNode(node.name) !== node) return;
  await closeNode(node);
}

/** Detaches `node` from its children, drops its I/O half, closes it, and frees inline children left without parents. */
async function closeNode(node: BlockNode): Promise<void> {
  const children = node.children.map((c) => c.child);
  await drained([node, ...children], async () => {
    if (node.attached) {
      // The I/O half is gone even when its last flush failed; like QEMU's bdrv_close(), go on closing.
      await node.ctx.channel
        .request(proto.detachNode, { nodeName: node.name })
        .catch((err: Error) => log.error({ node: node.name, err: err.message }, 'flush on close failed'));
      node.attached = false;
      node.ctx.nodes.delete(node.name);
    }
    for (const edge of [...node.children]) detachChild(edge);
  });
  await node.driver.close?.(node);
  unregisterNode(node);
  for (const child of children) {
    if (!child.monitorOwned && child.parents.length === 0 && findNode(child.name) === child) await closeNode(child);
  }
}

/** Closes `node` (and the chain below it that nothing else uses) once nothing uses it and the monitor does not own it. */
export async function closeIfUnused(node: BlockNode): Promise<void> {
  assertMainLoop();
  if (!node.monitorOwned && node.parents.length === 0 && findNode(node.name) === node) await closeNode(node);
}

/** Reasons a node cannot be deleted right now (QEMU's op blockers), registered by its users: jobs, overlays. */
const deleteBlockers: Array<(node: BlockNode) => string | undefined> = [];

export function registerDeleteBlocker(blocker: (node: BlockNode) => string | undefined): void {
  deleteBlockers.push(blocker);
}

/** Why an operation on `node` is blocked now (a job or an overlay uses it), as QEMU's op blockers say it; undefined when it is not. */
export function nodeBusyReason(node: BlockNode): string | undefined {
  assertMainLoop();
  for (const blocked of deleteBlockers) {
    const reason = blocked(node);
    if (reason) return `Node '${node.name}' is busy: ${reason}`;
  }
  return undefined;
}

/** QEMU's bdrv_op_is_blocked() error: blockdev-del and external snapshots refuse a busy node. */
export function checkNotBlocked(node: BlockNode): void {
  const busy = nodeBusyReason(node);
  if (busy) throw QmpError.generic(busy);
  // A backing node is in use by its overlay (QEMU's backing blocker, older than any job's).
  const overlay = node.parents.find((e) => e.role === 'backing' && e.parent.kind === 'node');
  if (overlay) throw QmpError.generic(`Node '${node.name}' is busy: node is used as backing hd of '${overlay.parent.name}'`);
}

/** blockdev-del, with QEMU's checks in QEMU's order. */
export async function blockdevDel(name: string): Promise<void> {
  assertMainLoop();
  const node = findNode(name);
  if (!node) throw QmpError.generic(`Failed to find node with node-name='${name}'`);
  // A user that is not a node (an export) is checked first, with QEMU's words for a node attached to a BlockBackend.
  if (node.parents.some((p) => p.parent.kind === 'backend' && p.parent.graphType === 'block-backend')) throw QmpError.generic(`Node ${name} is in use`);
  checkNotBlocked(node);
  if (!node.monitorOwned) throw QmpError.generic(`Node ${name} is not owned by the monitor`);
  if (node.parents.length > 0 || node.references > 0) throw QmpError.generic(`Block device ${name} is in use`);
  await closeNode(node);
}

/** Closes every node, parents before children, for quit. */
export async function closeAllNodes(): Promise<void> {
  assertMainLoop();
  for (let roots = allNodes().filter((n) => n.parents.length === 0); roots.length > 0; roots = allNodes().filter((n) => n.parents.length === 0)) {
    for (const node of roots) await closeNode(node);
  }
}
