/**
 * blockdev-mirror, the control half: checks the arguments in QEMU's order
 * and with its words, inserts mirror_top above the source, arms the run
 * half's dirty tracking in the same drained section, and at the end either
 * pivots (the target takes the source's parents) or leaves the source in
 * place; in both cases after a final copy inside a drained section, so the
 * target is an exact copy.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { PERM, PERM_ALL } from '../block/common/permissions';
import type { BackendParent, BlockNode } from '../block/global-state/block-node';
import { attachChild, findNode, replaceNode, syncChildren } from '../block/global-state/graph';
import * as proto from '../block/common/io-context-protocol';
import { moveToContext } from '../block/global-state/iothread-move';
import { activeCommitTopGs, mirrorTopGs } from '../block/drivers/mirror-top/gs';
import { jobFinalCopy, type MirrorRunParams, type OnError } from './common/job-control';
import { BlockJob, checkNotInJob, type CommonJobArgs } from './block-job';
import { checkFilterName, insertFilter, lookupNode, removeFilter } from './job-filter';

export interface MirrorArgs extends CommonJobArgs {
  target: string;
  replaces?: string;
  sync: 'top' | 'full' | 'none' | 'incremental' | 'bitmap';
  granularity?: number;
  'buf-size'?: number;
  'copy-mode'?: 'background' | 'write-blocking';
  /** drive-mirror only; blockdev-mirror always unmaps. */
  unmap?: boolean;
}

/** What an active block-commit adds to a mirror of the top into the base (commit.ts). */
export interface ActiveCommitSetup {
  /** Nodes between the top and the base, which the job holds unwritable by others. */
  intermediates: BlockNode[];
  /** Chain depth of the base seen from the top: only what lies above it is copied. */
  baseDepth: number;
  /** Called when the job ends without its pivot. */
  restoreBase?: () => Promise<void>;
}

const DEFAULT_GRANULARITY = 64 * 1024;
const DEFAULT_BUF_SIZE = 16 * 1024 * 1024;

/** What drive-mirror and active commit add: a new target image (reads as zeros) that closes after the job; the commit's setup. */
export interface MirrorTargetFacts {
  targetIsNew?: boolean;
  /** Set when the mirror is an active block-commit. */
  commit?: ActiveCommitSetup;
  /** Runs once the job's graph changes are undone. */
  afterClean?: () => Promise<void>;
  /** drive-mirror sync=none: the target gets the source as backing node at the pivot (it was opened without one). */
  sourceBacksTarget?: boolean;
}

export async function startMirror(args: MirrorArgs, facts: MirrorTargetFacts = {}): Promise<void> {
  const commit = facts.commit;
  assertMainLoop();
  const source = lookupNode(args.device);
  // The reference mirrors only nodes without node parents (qmp_get_root_bs).
  if (source.parents.some((e) => e.parent.kind === 'node')) throw QmpError.generic('Need a root block node');
  const target = lookupNode(args.target);
  checkNotInJob(source);
  checkNotInJob(target);
  if (source === target) throw QmpError.generic(`Can't mirror node into itself`);
  if (args.sync === 'incremental' || args.sync === 'bitmap') throw QmpError.generic(`Sync mode '${args.sync}' not supported`);
  const granularity = args.granularity ?? 0;
  if (granularity !== 0 && (granularity < 512 || granularity > 64 * 1024 * 1024)) {
    throw QmpError.generic(`Parameter 'granularity' expects a value in range [512B, 64MB]`);
  }
  if (granularity & (granularity - 1)) throw QmpError.generic(`Parameter 'granularity' expects a power of 2`);
  if ((args['buf-size'] ?? 0) < 0) throw QmpError.generic(`Invalid parameter 'buf-size'`);
  if (args.replaces !== undefined) {
    const replaced = findNode(args.replaces);
    if (!replaced) throw QmpError.generic(`Failed to find node with node-name='${args.replaces}'`);
    if (replaced !== source) {
      throw QmpError.generic(
        `Cannot replace '${args.replaces}' by a node mirrored from '${args.device}', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data`,
      );
    }
  }
  checkFilterName(args['filter-node-name']);

  // The run half works on both nodes: they share the source's I/O context.
  if (target.ctx !== source.ctx) await moveToContext(target, source.ctx, true);

  const params: MirrorRunParams = {
    kind: 'mirror',
    source: source.name,
    target: target.name,
    sync: args.sync,
    granularity: granularity || DEFAULT_GRANULARITY,
    bufSize: Math.max(args['buf-size'] || DEFAULT_BUF_SIZE, granularity || DEFAULT_GRANULARITY),
    copyMode: args['copy-mode'] ?? 'background',
    unmap: args.unmap ?? true,
    allocatedOnly: facts.targetIsNew,
    onSourceError: (args['on-source-error'] ?? 'report') as OnError,
    onTargetError: (args['on-target-error'] ?? 'report') as OnError,
    baseDepth: commit?.baseDepth,
  };

  let filter: BlockNode | undefined;
  let pivot = false;
  let pivoted = false;
  const bj: BlockJob = new BlockJob(
    args['job-id'] ?? '',
    commit ? 'commit' : 'mirror',
    source.ctx,
    {
      complete: () => {
        pivot = true;
      },
      hardCancel: (b, force) => force || !b.job.isReady,
      pausedUntilFinalized: true,
      async commit(b) {
        // A soft cancel after READY ends as completed, without the pivot.
        await finish(b, pivot && !b.job.cancelled);
      },
      async clean(b) {
        if (filter) await finish(b, false);
        if (!pivoted) await commit?.restoreBase?.();
        await facts.afterClean?.();
      },
    },
    { autoFinalize: args['auto-finalize'] ?? true, autoDismiss: args['auto-dismiss'] ?? true },
  );

  /** Final copy (on success), drop the job's edges, remove mirror_top; its parents go to the target on pivot. */
  const finish = async (b: BlockJob, toTarget: boolean): Promise<void> => {
    const f = filter;
    if (!f) return;
    filter = undefined;
    const success = b.job.error === undefined && !b.job.isCancelled;
    pivoted = toTarget;
    await removeFilter(f, toTarget ? target : source, [source, target], async () => {
      if (success) await b.ctx.channel.request(jobFinalCopy, { id: b.id });
      b.dropEdges();
      if (toTarget) await pivotSourceUsers();
    });
  };

  /**
   * The pivot for what stays on the source while the job runs: the target's
   * backing edge to the source (sync=none of drive-mirror) is made first, so
   * it stays there, then exports move to the target, as QEMU's replacement
   * of the source node moves every parent.
   */
  const pivotSourceUsers = async (): Promise<void> => {
    if (facts.sourceBacksTarget && !target.child('backing')) {
      attachChild(target, source, 'backing');
      await syncChildren(target);
    }
    const moved = replaceNode(source, target, (e) => e.parent.kind !== 'backend' || e.parent.graphType === 'block-job');
    if (moved.length > 0) await source.ctx.channel.request(proto.replaceBackendRoot, { from: source.name, to: target.name });
  };

  bj.job.create();
  try {
    bj.setSpeed(args.speed ?? 0);
    filter = await insertFilter({ name: args['filter-node-name'], driver: commit ? activeCommitTopGs : mirrorTopGs, source, sourceRole: 'backing', others: [] }, [source, target], (f) => bj.withEdges(async () => {
      bj.addEdge(f, 'main node', PERM.CONSISTENT_READ, PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED);
      bj.addEdge(source, 'source', 0, PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED);
      bj.addEdge(target, 'target', 0, PERM_ALL);
      // They disappear at the pivot: nobody may rely on reading them consistently meanwhile.
      for (const n of commit?.intermediates ?? []) bj.addEdge(n, 'intermediate node', 0, PERM.WRITE_UNCHANGED | PERM.WRITE);
      // The job writes the target through a BlockBackend of its own, which lets nobody else write it (a commit's base: nobody resize it).
      const backend: BackendParent = { kind: 'backend', name: '', graphType: 'block-backend' };
      const shared = commit ? PERM_ALL & ~PERM.RESIZE : PERM.WRITE_UNCHANGED;
      bj.edges.push(attachChild(backend, target, 'root', { perm: PERM.WRITE, shared }));
      await bj.prepare(params);
    }));
  } catch (err) {
    bj.job.failEarly();
    throw err;
  }
  bj.job.start();
}
