/**
 * blockdev-reopen: switches nodes between read-only and read-write
 * (re-taking image locks; a file is reopened with the new mode) and
 * changes or removes a node's backing child, for a list of nodes at once:
 * every check passes before anything changes, and a refused permission
 * puts everything back. Options other than these must keep their value
 * ("Cannot change the option …"). Global state.
 */
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import { PERM } from '../common/permissions';
import type { BdrvChild, BlockNode } from './block-node';
import { drained } from './drain';
import { attachChild, detachChild, findNode, refreshPerms, syncChildren } from './graph';

type Options = Record<string, unknown>;

/** Keys a reopen acts on; every other one must repeat the node's value. */
const HANDLED = new Set(['node-name', 'driver', 'read-only', 'file', 'backing']);

interface Plan {
  /** New read-only state of each node the reopen reaches (listed nodes and the children they reopen). */
  readOnly: Map<BlockNode, boolean>;
  /** New backing child (null: none) of nodes whose `backing` changes. */
  backing: Map<BlockNode, BlockNode | null>;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The value a node has for a common option, in the shape blockdev-add takes it. */
function currentCommon(node: BlockNode, key: string): unknown {
  const c = node.common;
  switch (key) {
    case 'discard':
      return c.discard;
    case 'detect-zeroes':
      return c.detectZeroes;
    case 'force-share':
      return c.forceShare;
    case 'auto-read-only':
      return c.autoReadOnly;
    case 'cache':
      return undefined;
    default:
      return node.options[key];
  }
}

function checkUnchanged(node: BlockNode, opts: Options, prefix: string): void {
  for (const [key, value] of Object.entries(opts)) {
    if (HANDLED.has(key)) continue;
    if (key === 'cache') {
      const cache = value as { direct?: boolean; 'no-flush'?: boolean };
      if ((cache.direct ?? false) !== node.common.cacheDirect) throw QmpError.generic(`Cannot change the option '${prefix}cache.direct'`);
      if ((cache['no-flush'] ?? false) !== node.common.cacheNoFlush) throw QmpError.generic(`Cannot change the option '${prefix}cache.no-flush'`);
      continue;
    }
    const current = currentCommon(node, key);
    if (!same(value, current)) throw QmpError.generic(`Cannot change the option '${prefix}${key}'`);
  }
}

/** Whether `node` is `target` or lies below it. */
function reaches(node: BlockNode, target: BlockNode): boolean {
  return node === target || node.children.some((c) => reaches(c.child, target));
}

/**
 * Plans the reopen of `node` with `opts`. `inherited` is the read-only
 * value a parent passes down when it set one explicitly; a child named by
 * its own node name keeps its state otherwise, as QEMU keeps the options it
 * had (keep_old_opts).
 */
function planNode(node: BlockNode, opts: Options, plan: Plan, inherited: boolean | undefined, keepOld: boolean, prefix: string): void {
  if (node.driver.supportsBacking && !('backing' in opts) && (node.child('backing') || node.driver.imageInfo?.(node)?.backingFilename !== undefined)) {
    throw QmpError.generic(`backing is missing for '${node.name}'`);
  }
  if (opts.driver !== undefined && opts.driver !== node.driver.descriptor.name) throw QmpError.generic(`Cannot change the option '${prefix}driver'`);
  if (opts['node-name'] !== undefined && opts['node-name'] !== node.name) throw QmpError.generic(`Cannot change the option '${prefix}node-name'`);
  checkUnchanged(node, opts, prefix);

  const explicit = typeof opts['read-only'] === 'boolean' ? (opts['read-only'] as boolean) : undefined;
  const readOnly = explicit ?? inherited ?? (keepOld ? node.readOnly : false);
  plan.readOnly.set(node, readOnly);
  // What children inherit: an explicit value of this level, or what this level inherited.
  const passDown = explicit ?? inherited;

  for (const edge of node.children) {
    if (edge.role === 'backing') continue;
    planChild(node, edge, opts[edge.role], plan, passDown, prefix);
  }

  if (node.driver.supportsBacking && 'backing' in opts) {
    const ref = opts.backing;
    const current = node.child('backing');
    if (ref === null) {
      if (current) plan.backing.set(node, null);
    } else if (typeof ref === 'string') {
      const target = findNode(ref);
      if (!target) throw QmpError.generic(`Cannot find device='' nor node-name='${ref}'`);
      if (reaches(target, node)) throw QmpError.generic(`Making '${ref}' a backing child of '${node.name}' would create a cycle`);
      if (target !== current) plan.backing.set(node, target);
    } else if (current && typeof ref === 'object') {
      planChild(node, node.children.find((c) => c.role === 'backing')!, ref, plan, passDown, prefix);
    }
  }
}

/** A child's part: its options given inline are a reopen of the same child; its name keeps it. */
function planChild(parent: BlockNode, edge: BdrvChild, ref: unknown, plan: Plan, passDown: boolean | undefined, prefix: string): void {
  const child = edge.child;
  // A child the parent did not open itself keeps its own state.
  const inherits = !child.monitorOwned;
  if (typeof ref === 'string') {
    if (!findNode(ref)) throw QmpError.generic(`Cannot find device='' nor node-name='${ref}'`);
    if (ref !== child.name) throw QmpError.generic(`Cannot change the option '${prefix}${edge.role}'`);
    if (inherits && !plan.readOnly.has(child)) planNode(child, { 'node-name': child.name, ...backingKept(child) }, plan, passDown, true, `${prefix}${edge.role}.`);
  } else if (ref && typeof ref === 'object') {
    planNode(child, ref as Options, plan, passDown, false, `${prefix}${edge.role}.`);
  } else if (ref === undefined && edge.role !== 'backing' && parent.options[edge.role] !== undefined) {
    throw QmpError.generic(`Cannot change the option '${prefix}${edge.role}'`);
  }
}

/** A child reopened with its old options keeps its backing child. */
function backingKept(node: BlockNode): Options {
  const b = node.child('backing');
  return node.driver.supportsBacking ? { backing: b ? b.name : null } : {};
}

export async function blockdevReopen(list: Options[]): Promise<void> {
  assertMainLoop();
  const listed: Array<{ node: BlockNode; opts: Options }> = [];
  for (const opts of list) {
    const name = opts['node-name'];
    if (typeof name !== 'string') throw QmpError.generic('node-name not specified');
    const node = findNode(name);
    if (!node) throw QmpError.generic(`Failed to find node with node-name='${name}'`);
    listed.push({ node, opts });
  }
  const plan: Plan = { readOnly: new Map(), backing: new Map() };
  for (const { node, opts } of listed) planNode(node, opts, plan, undefined, false, '');
  // The nodes changing, their new backing nodes and the backing nodes they leave.
  const involved = new Set<BlockNode>(plan.readOnly.keys());
  for (const [node, target] of plan.backing) {
    if (target) involved.add(target);
    const old = node.child('backing');
    if (old) involved.add(old);
  }
  await drained([...involved], () => apply(plan));
}

async function apply(plan: Plan): Promise<void> {
  const changed = [...plan.readOnly].filter(([n, ro]) => n.readOnly !== ro).map(([n]) => n);
  const toWritable = changed.filter((n) => !plan.readOnly.get(n) && n.driver.reopenWritable);
  const reopened: BlockNode[] = [];
  const reopenBack = async (): Promise<void> => {
    for (const n of reopened) await n.driver.reopenWritable!(n, false).catch((e: Error) => log.warn({ node: n.name, err: e.message }, 'could not reopen the file read-only again'));
  };
  // Files first: a file that cannot be opened for writing stops the reopen before anything changed.
  try {
    for (const node of toWritable) {
      await node.driver.reopenWritable!(node, true);
      reopened.push(node);
    }
  } catch (err) {
    await reopenBack();
    throw err;
  }

  const oldBacking = new Map<BlockNode, BdrvChild | undefined>();
  const newEdges: BdrvChild[] = [];
  const setFlags = (node: BlockNode, ro: boolean): void => {
    node.readOnly = ro;
    node.common.readOnly = ro;
  };
  try {
    for (const node of changed) setFlags(node, plan.readOnly.get(node)!);
    for (const [node, target] of plan.backing) {
      const edge = node.children.find((c) => c.role === 'backing');
      oldBacking.set(node, edge);
      if (edge) detachChild(edge);
      if (target) newEdges.push(attachChild(node, target, 'backing'));
    }
    // Parents before children: a parent's edges ask for what its new state needs.
    for (const node of changed) refreshPerms(node);
    for (const node of changed) {
      if (node.readOnly && node.cumulativePerms().perm & (PERM.WRITE | PERM.RESIZE)) throw QmpError.generic('Block node is read-only');
    }
  } catch (err) {
    for (const e of newEdges) detachChild(e);
    for (const [node, edge] of oldBacking) if (edge) attachChild(node, edge.child, 'backing', { perm: edge.perm, shared: edge.shared });
    for (const node of changed) setFlags(node, !plan.readOnly.get(node));
    for (const node of changed) refreshPerms(node);
    await reopenBack();
    throw err;
  }
  // The permission checks passed: files going read-only change mode, I/O halves learn the new state.
  for (const node of changed) {
    if (node.readOnly && node.driver.reopenWritable) {
      await node.driver.reopenWritable(node, false).catch((e: Error) => log.warn({ node: node.name, err: e.message }, 'could not reopen the file read-only'));
    }
    await node.ctx.channel.request(proto.updateNode, { nodeName: node.name, readOnly: node.readOnly });
  }
  for (const node of plan.backing.keys()) await syncChildren(node);
}
