/**
 * The target of drive-backup and drive-mirror, given by filename: created
 * first unless mode is `existing` (QEMU's default is `absolute-paths`), then
 * opened as a node no monitor owns, which closes again when the job that
 * uses it is gone. The jobs themselves are blockdev-backup and
 * blockdev-mirror on that node.
 */
import { assertMainLoop } from '../common/thread-context';
import type { BlockNode } from '../block/global-state/block-node';
import { closeImplicitNode, openImplicitNode } from '../block/global-state/blockdev';
import { nodeFilename } from '../block/global-state/node-info';
import { probeFormat } from '../block/global-state/probe-format';
import { createImage } from './image-create';

export interface DriveTargetArgs {
  target: string;
  format?: string;
  mode?: 'existing' | 'absolute-paths';
  /** drive-mirror's `node-name` for the target. */
  nodeName?: string;
}

/** The first node below `node` that stores data (skips filters). */
function formatNode(node: BlockNode): BlockNode {
  let n = node;
  while (n.driver.descriptor.kind === 'filter') {
    const child = n.children.find((c) => c.role === 'file' || c.role === 'backing');
    if (!child) break;
    n = child.child;
  }
  return n;
}

/**
 * Creates (mode absolute-paths) and opens the target. `backingOf` is the
 * node whose image becomes the new image's backing file (sync top/none),
 * or undefined for a standalone image. With `readsThrough` (drive-mirror)
 * the target opens with that node as its backing node, so what the job
 * does not copy reads through, also after the pivot.
 */
export async function openDriveTarget(args: DriveTargetArgs, source: BlockNode, backingOf: BlockNode | undefined, readsThrough: boolean): Promise<BlockNode> {
  assertMainLoop();
  const mode = args.mode ?? 'absolute-paths';
  const sourceFormat = formatNode(source).driver.descriptor.name;
  let format = args.format ?? (mode === 'existing' ? undefined : sourceFormat);
  if (mode !== 'existing') {
    const backing = backingOf ? formatNode(backingOf) : undefined;
    const backingFile = backing ? nodeFilename(backing) : undefined;
    await createImage({
      filename: args.target,
      format: format!,
      size: source.length,
      backing: backing && backingFile !== undefined ? { filename: backingFile, format: backing.driver.descriptor.name } : undefined,
    });
  }
  format ??= probeFormat(args.target);
  const options: Record<string, unknown> = { driver: format, discard: 'unmap', 'detect-zeroes': 'unmap' };
  if (args.nodeName !== undefined) options['node-name'] = args.nodeName;
  if (format === 'raw' || format === 'qcow2') options.file = { driver: 'file', filename: args.target };
  else options.filename = args.target;
  if (format === 'qcow2' && backingOf) {
    // A mirror's target reads what is not copied through its backing node, the open one; a backup's target is only written.
    options.backing = readsThrough ? backingOf.name : null;
  }
  return openImplicitNode(options);
}

/**
 * The node a new target image names as its backing file, by sync mode: the
 * source's backing for top (without one, top copies everything, as full),
 * the source itself for none, nothing for full.
 */
export function driveTargetBacking<S extends string>(source: BlockNode, sync: S): { sync: S | 'full'; backingOf: BlockNode | undefined } {
  assertMainLoop();
  if (sync === 'top') {
    const backingOf = source.child('backing');
    return backingOf ? { sync, backingOf } : { sync: 'full', backingOf: undefined };
  }
  return { sync, backingOf: sync === 'none' ? source : undefined };
}

export { closeImplicitNode as closeDriveTarget };
