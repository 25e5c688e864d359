/**
 * block-stream, the control half: checks the arguments in QEMU's order and
 * words, inserts a copy-on-read filter above the node streamed into, and
 * lets the run half copy the data of the layers being removed into it.
 * Then the filter goes, the node's backing becomes the base (or nothing),
 * its image records the new backing file, and the layers nothing else
 * uses are closed. A cancelled or failed stream leaves the chain as it was:
 * what was copied is the same data the backing chain shows.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { PERM, PERM_ALL } from '../block/common/permissions';
import type { BackendParent, BlockNode } from '../block/global-state/block-node';
import { chainContains, findBackingImage, nextInChain, overlayOf, rewriteBackingFile } from '../block/global-state/backing-file';
import { closeIfUnused, nodeBusyReason } from '../block/global-state/blockdev';
import { drained } from '../block/global-state/drain';
import { attachChild, detachChild, requireNode, syncChildren } from '../block/global-state/graph';
import { nodeFilename } from '../block/global-state/node-info';
import { setNodeReadOnly } from '../block/global-state/read-write';
import { copyOnReadGs } from '../block/drivers/copy-on-read/gs';
import type { ChainCopyRunParams, OnError } from './common/job-control';
import { BlockJob } from './block-job';
import { checkFilterName, insertFilter, lookupNode, removeFilter } from './job-filter';

export interface StreamArgs {
  'job-id'?: string;
  device: string;
  base?: string;
  'base-node'?: string;
  'backing-file'?: string;
  bottom?: string;
  speed?: number;
  'on-error'?: OnError;
  'filter-node-name'?: string;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

/** The nodes from `top` down to `end` (exclusive; undefined: the whole chain). */
export function chainBetween(top: BlockNode, end: BlockNode | undefined): BlockNode[] {
  const out: BlockNode[] = [];
  for (let n: BlockNode | undefined = top; n && n !== end; n = nextInChain(n)) out.push(n);
  return out;
}

/** Chain depth of `end` seen from `top` as block status counts it: one per format layer. */
export function depthOf(top: BlockNode, end: BlockNode | undefined): number {
  if (!end) return Number.MAX_SAFE_INTEGER;
  return chainBetween(top, end).filter((n) => n.driver.descriptor.kind !== 'filter').length + 1;
}

export async function startStream(args: StreamArgs): Promise<void> {
  assertMainLoop();
  if (args.base !== undefined && args['base-node'] !== undefined) throw QmpError.generic(`'base' and 'base-node' cannot be specified at the same time`);
  if (args.base !== undefined && args.bottom !== undefined) throw QmpError.generic(`'base' and 'bottom' cannot be specified at the same time`);
  if (args.bottom !== undefined && args['base-node'] !== undefined) throw QmpError.generic(`'bottom' and 'base-node' cannot be specified at the same time`);
  const bs = lookupNode(args.device);
  let base: BlockNode | undefined;
  if (args.base !== undefined) {
    base = findBackingImage(bs, args.base);
    if (!base) throw QmpError.generic(`Can't find '${args.base}' in the backing chain`);
  }
  if (args['base-node'] !== undefined) {
    base = requireNode(args['base-node']);
    if (base === bs || !chainContains(bs, base)) throw QmpError.generic(`Node '${args['base-node']}' is not a backing image of '${args.device}'`);
  }
  let bottom: BlockNode | undefined;
  if (args.bottom !== undefined) {
    bottom = requireNode(args.bottom);
    if (bottom.driver.descriptor.kind === 'filter') throw QmpError.generic(`Node '${args.bottom}' is a filter, use a non-filter node as 'bottom'`);
    if (!chainContains(bs, bottom)) throw QmpError.generic(`Node '${args.bottom}' is not in a chain starting from '${args.device}'`);
  }
  for (const n of chainBetween(bs, bottom ? nextInChain(bottom) : base)) {
    const busy = nodeBusyReason(n);
    if (busy) throw QmpError.generic(busy);
  }
  if (base === undefined && args['backing-file'] !== undefined) throw QmpError.generic('backing file specified, but streaming the entire chain');

  // The lowest node whose data is copied, and the node below it that stays.
  const baseOverlay = bottom ?? (base ? overlayOf(bs, base) : chainBetween(bs, undefined).at(-1))!;
  const newBase = nextInChain(baseOverlay);
  checkFilterName(args['filter-node-name']);

  const wasReadOnly = await setNodeReadOnly(bs, false);
  const removed = chainBetween(bs, newBase).slice(1);
  const params: ChainCopyRunParams = {
    kind: 'stream',
    source: bs.name,
    target: bs.name,
    minDepth: 2,
    baseDepth: depthOf(bs, newBase),
    onError: args['on-error'] ?? 'report',
  };

  let filter: BlockNode | undefined;
  const dropFilter = async (b: BlockJob): Promise<void> => {
    const f = filter;
    if (!f) return;
    filter = undefined;
    await removeFilter(f, bs, [bs, ...removed], async () => b.dropEdges());
  };
  const bj: BlockJob = new BlockJob(
    args['job-id'] ?? '',
    'stream',
    bs.ctx,
    {
      async commit(b) {
        await dropFilter(b);
        const hadBacking = bs.child('backing') !== undefined;
        await relink(bs, bs.child('backing'), newBase);
        if (hadBacking) {
          const name = newBase ? (args['backing-file'] ?? nodeFilename(newBase)) : undefined;
          await rewriteBackingFile(bs, name, newBase?.driver.descriptor.name);
        }
      },
      async clean(b) {
        await dropFilter(b);
        if (wasReadOnly) await setNodeReadOnly(bs, true);
      },
    },
    { autoFinalize: args['auto-finalize'] ?? true, autoDismiss: args['auto-dismiss'] ?? true },
  );

  bj.job.create();
  try {
    bj.setSpeed(args.speed ?? 0);
    filter = await insertFilter({ name: args['filter-node-name'], driver: copyOnReadGs, source: bs, sourceRole: 'file', others: [] }, [bs, ...removed], (f) =>
      bj.withEdges(async () => {
        bj.addEdge(f, 'main node', 0, PERM_ALL);
        // The job reads through the filter with a BlockBackend of its own.
        const backend: BackendParent = { kind: 'backend', name: '', graphType: 'block-backend' };
        bj.edges.push(attachChild(backend, f, 'root', { perm: PERM.CONSISTENT_READ, shared: PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED | PERM.WRITE }));
        bj.addEdge(bs, 'active node', 0, PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED | PERM.WRITE);
        for (const n of removed) bj.addEdge(n, 'intermediate node', 0, PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED);
        await bj.prepare(params);
      }),
    );
  } catch (err) {
    bj.job.failEarly();
    if (wasReadOnly) await setNodeReadOnly(bs, true).catch(() => undefined);
    throw err;
  }
  bj.job.start();
}

/** Makes `base` (or nothing) the backing of `node` in place of `oldBacking`, and closes what nothing uses any more. */
export async function relink(node: BlockNode, oldBacking: BlockNode | undefined, base: BlockNode | undefined): Promise<void> {
  if (oldBacking === base) return;
  const edge = node.children.find((c) => c.role === 'backing');
  await drained([node, ...(oldBacking ? [oldBacking] : []), ...(base ? [base] : [])], async () => {
    if (edge) detachChild(edge);
    if (base) attachChild(node, base, 'backing');
    await syncChildren(node);
  });
  if (oldBacking) await closeIfUnused(oldBacking);
}
