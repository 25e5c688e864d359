/**
 * block-commit, the control half, with QEMU's checks in QEMU's order and
 * words. Committing the active layer (or a node someone writes) is a
 * mirror into the base (mirror.ts, job type `commit`): READY, then
 * job-complete pivots the top's users to the base. Committing an
 * intermediate node inserts a commit_top filter above it, copies what lies
 * between it and the base into the base, then gives the overlay above it
 * the base as backing and records the base's name in the overlay's image.
 * A cancelled or failed commit leaves the chain as it was: the base got
 * only data that the layers above it hide.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { PERM, PERM_ALL } from '../block/common/permissions';
import type { BackendParent, BlockNode } from '../block/global-state/block-node';
import { chainBase, chainContains, findBackingImage, isRootNode, overlayOf, rewriteBackingFile, skipFilters } from '../block/global-state/backing-file';
import { closeIfUnused, nodeBusyReason } from '../block/global-state/blockdev';
import { attachChild, findNode, requireNode } from '../block/global-state/graph';
import { nodeFilename } from '../block/global-state/node-info';
import { setNodeReadOnly } from '../block/global-state/read-write';
import { blockResize } from '../block/global-state/resize';
import { commitTopGs } from '../block/drivers/commit-top/gs';
import type { ChainCopyRunParams, OnError } from './common/job-control';
import { BlockJob } from './block-job';
import { checkFilterName, insertFilter, removeFilter } from './job-filter';
import { startMirror } from './mirror';
import { chainBetween, depthOf } from './stream';

export interface CommitArgs {
  'job-id'?: string;
  device: string;
  'base-node'?: string;
  base?: string;
  'top-node'?: string;
  top?: string;
  'backing-file'?: string;
  speed?: number;
  'on-error'?: OnError;
  'filter-node-name'?: string;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
}

function notBusy(node: BlockNode): void {
  const busy = nodeBusyReason(node);
  if (busy) throw QmpError.generic(busy);
}

export async function startCommit(args: CommitArgs): Promise<void> {
  assertMainLoop();
  const bs = findNode(args.device);
  // Looked up first, with its own error class: management tools probe for live commit with it.
  if (!bs) throw new QmpError('DeviceNotFound', `Device '${args.device}' not found`);
  if (!isRootNode(bs)) throw QmpError.generic('Need a root block node');
  notBusy(bs);

  let top: BlockNode | undefined = bs;
  if (args['top-node'] !== undefined && args.top !== undefined) throw QmpError.generic(`'top-node' and 'top' are mutually exclusive`);
  if (args['top-node'] !== undefined) {
    top = requireNode(args['top-node']);
    if (!chainContains(bs, top)) throw QmpError.generic(`'${args['top-node']}' is not in this backing file chain`);
  } else if (args.top !== undefined && args.top !== nodeFilename(bs)) {
    top = findBackingImage(bs, args.top);
  }
  if (!top) throw QmpError.generic(`Top image file ${args.top ?? 'NULL'} not found`);

  let base: BlockNode | undefined;
  if (args['base-node'] !== undefined && args.base !== undefined) throw QmpError.generic(`'base-node' and 'base' are mutually exclusive`);
  if (args['base-node'] !== undefined) {
    base = requireNode(args['base-node']);
    if (!chainContains(top, base)) throw QmpError.generic(`'${args['base-node']}' is not in this backing file chain`);
  } else if (args.base !== undefined) {
    base = findBackingImage(top, args.base);
    if (!base) throw QmpError.generic(`Can't find '${args.base}' in the backing chain`);
  } else {
    base = chainBase(top);
  }
  for (const n of chainBetween(top, base)) notBusy(n);
  if (top === base) throw QmpError.generic('cannot commit an image into itself');

  const writtenByOthers = (top.cumulativePerms().perm & PERM.WRITE) !== 0;
  const isActive = skipFilters(top) === skipFilters(bs);
  if (writtenByOthers || isActive) {
    if (args['backing-file'] !== undefined) {
      throw QmpError.generic(isActive ? `'backing-file' specified, but 'top' is the active layer` : `'backing-file' specified, but 'top' has a writer on it`);
    }
    await startActiveCommit(args, top, base);
    return;
  }
  notBusy(overlayOf(bs, top)!);
  await startIntermediateCommit(args, bs, top, base);
}

/** A mirror of the top into the base, of what lies above the base only, reported as a commit job. */
/** A base shorter than the top grows to the top's length first, as in QEMU. */
async function growBase(top: BlockNode, base: BlockNode): Promise<void> {
  if (base.length >= top.length) return;
  try {
    await blockResize(undefined, base.name, top.length);
  } catch (err) {
    throw QmpError.generic(`Top image ${nodeFilename(top)} is larger than base image ${nodeFilename(base)}, and resize of base image failed: ${(err as Error).message}`);
  }
}

async function startActiveCommit(args: CommitArgs, top: BlockNode, base: BlockNode): Promise<void> {
  const wasReadOnly = await setNodeReadOnly(base, false);
  try {
    await growBase(top, base);
    await startMirror(
      {
        // QEMU names the job after the device's BlockBackend, which a node has not: without job-id it is refused.
        'job-id': args['job-id'] ?? '',
        device: top.name,
        target: base.name,
        sync: 'full',
        speed: args.speed,
        'on-source-error': args['on-error'],
        'on-target-error': args['on-error'],
        'filter-node-name': args['filter-node-name'],
        'auto-finalize': args['auto-finalize'],
        'auto-dismiss': args['auto-dismiss'],
      },
      {
        commit: {
          intermediates: chainBetween(top, base).slice(1),
          baseDepth: depthOf(top, base),
          // As QEMU: a base made writable for the job goes back to read-only only when the job does not complete.
          restoreBase: wasReadOnly ? async () => void (await setNodeReadOnly(base, true)) : undefined,
        },
      },
    );
  } catch (err) {
    if (wasReadOnly) await setNodeReadOnly(base, true).catch(() => undefined);
    throw err;
  }
}

async function startIntermediateCommit(args: CommitArgs, bs: BlockNode, top: BlockNode, base: BlockNode): Promise<void> {
  if (skipFilters(top) === skipFilters(base)) throw QmpError.generic('Invalid files for merge: top and base are the same');
  const committed = chainBetween(top, base);
  const params: ChainCopyRunParams = {
    kind: 'commit',
    source: top.name,
    target: base.name,
    minDepth: 1,
    baseDepth: depthOf(top, base),
    onError: args['on-error'] ?? 'report',
  };

  let filter: BlockNode | undefined;
  let wasReadOnly = false;
  /** Removes commit_top: its parents (the overlay) go to the base on success, back to the top otherwise. */
  const dropFilter = async (b: BlockJob, heir: BlockNode): Promise<BlockNode[]> => {
    const f = filter;
    if (!f) return [];
    filter = undefined;
    const overlays = f.parents.flatMap((e) => (e.parent.kind === 'node' ? [e.parent] : []));
    await removeFilter(f, heir, [...committed, base, ...overlays], async () => b.dropEdges());
    return overlays;
  };
  const bj: BlockJob = new BlockJob(
    args['job-id'] ?? '',
    'commit',
    bs.ctx,
    {
      async commit(b) {
        const overlays = await dropFilter(b, base);
        const name = args['backing-file'] ?? nodeFilename(base);
        for (const o of overlays) await rewriteBackingFile(o, name, base.driver.descriptor.name);
        await closeIfUnused(top);
      },
      async clean(b) {
        await dropFilter(b, top);
        if (wasReadOnly) await setNodeReadOnly(base, true);
      },
    },
    { autoFinalize: args['auto-finalize'] ?? true, autoDismiss: args['auto-dismiss'] ?? true },
  );

  bj.job.create();
  try {
    bj.setSpeed(args.speed ?? 0);
    wasReadOnly = await setNodeReadOnly(base, false);
    await growBase(top, base);
    // The job exists when the filter is created, as in QEMU: a bad filter name shows as created, then null.
    checkFilterName(args['filter-node-name']);
    filter = await insertFilter({ name: args['filter-node-name'], driver: commitTopGs, source: top, sourceRole: 'backing', others: [] }, [...committed, base], () =>
      bj.withEdges(async () => {
        bj.addEdge(bs, 'main node', 0, PERM_ALL);
        for (const n of committed) bj.addEdge(n, 'intermediate node', 0, PERM.WRITE_UNCHANGED | PERM.WRITE);
        bj.addEdge(base, 'base', 0, PERM_ALL);
        // The job's BlockBackends: one writes the base, one reads the top.
        const baseBackend: BackendParent = { kind: 'backend', name: '', graphType: 'block-backend' };
        const grow = base.length < top.length ? PERM.RESIZE : 0;
        bj.edges.push(attachChild(baseBackend, base, 'root', { perm: PERM.CONSISTENT_READ | PERM.WRITE | grow, shared: PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED }));
        const topBackend: BackendParent = { kind: 'backend', name: '', graphType: 'block-backend' };
        bj.edges.push(attachChild(topBackend, top, 'root', { perm: 0, shared: PERM_ALL }));
        await bj.prepare(params);
      }),
    );
    // QEMU opens commit_top without write access; queries show it read-only.
    filter.readOnly = true;
  } catch (err) {
    bj.job.failEarly();
    if (wasReadOnly) await setNodeReadOnly(base, true).catch(() => undefined);
    throw err;
  }
  bj.job.start();
}
