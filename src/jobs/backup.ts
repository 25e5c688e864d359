/**
 * blockdev-backup, the control half: checks the arguments in QEMU's order
 * and with its words, inserts a copy-before-write filter above the source
 * and arms the run half's copy before write in the same drained section —
 * the moment the target's content refers to — then lets the run half copy
 * the rest. With a bitmap (`backup-bitmap.ts`), sync=bitmap copies only its
 * dirty clusters, and the bitmap's fate follows `bitmap-mode`.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { PERM_ALL } from '../block/common/permissions';
import type { BlockNode } from '../block/global-state/block-node';
import { moveToContext } from '../block/global-state/iothread-move';
import { copyBeforeWriteGs } from '../block/drivers/copy-before-write/gs';
import type { BackupRunParams, OnError } from './common/job-control';
import { BlockJob, type CommonJobArgs } from './block-job';
import { BackupBitmap, checkBackupBitmapArgs } from './backup-bitmap';
import { checkFilterName, insertFilter, lookupNode, removeFilter } from './job-filter';

export interface BackupArgs extends CommonJobArgs {
  target: string;
  sync: 'top' | 'full' | 'none' | 'incremental' | 'bitmap';
  bitmap?: string;
  'bitmap-mode'?: string;
  compress?: boolean;
}

const CLUSTER_SIZE = 64 * 1024;

export async function startBackup(args: BackupArgs): Promise<void> {
  assertMainLoop();
  const source = lookupNode(args.device);
  const target = lookupNode(args.target);
  const { sync, bitmap, mode } = checkBackupBitmapArgs(args, source);
  if (source === target) throw QmpError.generic('Source and target cannot be the same');
  // No driver of qbd writes compressed clusters; QEMU names the target's BlockBackend, which a node has not.
  if (args.compress) throw QmpError.generic('Compression is not supported for this drive ');
  if (source.length !== target.length) throw QmpError.generic('Source and target image have different sizes');
  checkFilterName(args['filter-node-name']);

  if (target.ctx !== source.ctx) await moveToContext(target, source.ctx, true);

  const params: BackupRunParams = {
    kind: 'backup',
    source: source.name,
    target: target.name,
    sync,
    clusterSize: CLUSTER_SIZE,
    onSourceError: (args['on-source-error'] ?? 'report') as OnError,
    onTargetError: (args['on-target-error'] ?? 'report') as OnError,
  };

  let filter: BlockNode | undefined;
  let held: BackupBitmap | undefined;
  const bj: BlockJob = new BlockJob(
    args['job-id'] ?? '',
    'backup',
    source.ctx,
    {
      commit: async () => held?.settle(true),
      abort: async () => held?.settle(false),
      async clean(b) {
        const f = filter;
        if (!f) return;
        filter = undefined;
        await removeFilter(f, source, [target], async () => b.dropEdges());
      },
    },
    { autoFinalize: args['auto-finalize'] ?? true, autoDismiss: args['auto-dismiss'] ?? true },
  );

  bj.job.create();
  try {
    bj.setSpeed(args.speed ?? 0);
    if (bitmap) {
      held = await BackupBitmap.freeze(bitmap, mode!, CLUSTER_SIZE);
      params.remaining = held.remaining.state;
      if (sync === 'bitmap') params.syncBitmap = held.source;
    }
    filter = await insertFilter(
      { name: args['filter-node-name'], driver: copyBeforeWriteGs, source, sourceRole: 'file', others: [{ role: 'target', node: target }] },
      [source, target],
      (f) =>
        bj.withEdges(async () => {
          bj.addEdge(f, 'main node', 0, PERM_ALL);
          bj.addEdge(target, 'target', 0, PERM_ALL);
          await bj.prepare(params);
        }),
    );
  } catch (err) {
    // A job that never started gives its bitmap back untouched.
    await held?.settle(false);
    bj.job.failEarly();
    throw err;
  }
  bj.job.start();
  // The reference's backup passes a drained section as it starts, which shows as a pause.
  bj.job.pauseInternal();
  bj.job.resumeInternal();
}
