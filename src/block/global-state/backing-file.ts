/**
 * The backing chain as the GS half sees it, and rewriting the backing file
 * name an image records: what change-backing-file, block-commit and
 * block-stream share.
 */
import * as path from 'node:path';
import { assertMainLoop } from '../../common/thread-context';
import type { BlockNode } from './block-node';
import { drained } from './drain';
import { nodeFilename } from './node-info';
import { setNodeReadOnly } from './read-write';

/** The next node down the chain: a filter's child, a format's backing (QEMU's bdrv_filter_or_cow_bs). */
export function nextInChain(node: BlockNode): BlockNode | undefined {
  if (node.driver.descriptor.kind === 'filter') return node.child('file') ?? node.child('backing');
  return node.child('backing');
}

/** Whether `node` is `top` or below it in its chain. */
export function chainContains(top: BlockNode, node: BlockNode): boolean {
  for (let n: BlockNode | undefined = top; n; n = nextInChain(n)) if (n === node) return true;
  return false;
}

/** The node directly above `node` in `top`'s chain (QEMU's bdrv_find_overlay). */
export function overlayOf(top: BlockNode, node: BlockNode): BlockNode | undefined {
  for (let n: BlockNode | undefined = top; n; n = nextInChain(n)) if (nextInChain(n) === node) return n;
  return undefined;
}

/** The bottom of the chain. */
export function chainBase(node: BlockNode): BlockNode {
  let n = node;
  for (let next = nextInChain(n); next; next = nextInChain(n)) n = next;
  return n;
}

/** Whether only BlockBackends (the monitor's, exports') use `node` (QEMU's bdrv_is_root_node). */
export function isRootNode(node: BlockNode): boolean {
  return node.parents.every((e) => e.parent.kind === 'backend' && e.parent.graphType !== 'block-job');
}

/** Skips filters downwards (QEMU's bdrv_skip_filters). */
export function skipFilters(node: BlockNode): BlockNode {
  let n = node;
  while (n.driver.descriptor.kind === 'filter') {
    const next = nextInChain(n);
    if (!next) break;
    n = next;
  }
  return n;
}

/**
 * The image of the chain below `top` that a file name given by the user
 * names (QEMU's bdrv_find_backing_image): the name an overlay records for
 * its backing file, or that name and the given one resolved against the
 * overlay's directory.
 */
export function findBackingImage(top: BlockNode, name: string): BlockNode | undefined {
  assertMainLoop();
  for (let n: BlockNode | undefined = top; n; n = nextInChain(n)) {
    const below = nextInChain(n);
    if (!below) return undefined;
    const recorded = n.driver.imageInfo?.(n).backingFilename;
    if (recorded === undefined) continue;
    if (recorded === name) return below;
    const dir = path.dirname(nodeFilename(n));
    const abs = (p: string) => (path.isAbsolute(p) ? path.resolve(p) : path.resolve(dir, p));
    if (abs(recorded) === abs(name) || path.resolve(nodeFilename(below)) === abs(name)) return below;
  }
  return undefined;
}

/**
 * Writes `name` and `format` as `node`'s backing file into its image, with
 * the node drained and, if it is read-only, made writable for the moment
 * (QEMU's bdrv_change_backing_file inside a reopen). Errors carry an errno
 * `code` when the driver failed, and say so when it has no such record.
 */
export async function rewriteBackingFile(node: BlockNode, name: string | undefined, format: string | undefined): Promise<void> {
  assertMainLoop();
  const hook = node.driver.changeBackingFile;
  if (!hook) throw Object.assign(new Error('Operation not supported'), { code: 'ENOTSUP' });
  const wasReadOnly = await setNodeReadOnly(node, false);
  try {
    await drained([node], () => hook.call(node.driver, node, name, format));
  } finally {
    if (wasReadOnly) await setNodeReadOnly(node, true);
  }
}
