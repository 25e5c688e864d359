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
import { BlockJob, checkNotInJob, type CommonJobArgs } from './block-job';
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

/** QEMU's bdrv_supports_compressed_writes(): the driver writes compressed clusters, through filters down to the data. */
function supportsCompressedWrites(node: BlockNode): boolean {
  if (!node.driver.supportsCompressedWrites) return false;
  const filtered = node.driver.descriptor.kind === 'filter' ? node.children[0]?.child : undefined;
  return filtered ? supportsCompressedWrites(filtered) : true;
}

/** blockdev-backup: the job starts at once. */
export async function startBackup(args: BackupArgs): Promise<void> {
  assertMainLoop();
  startPreparedBackup(await prepareBackup(args));
}

/**
 * Starts a backup job that `prepareBackup` created. The reference's backup
 * passes a drained section as it starts, which shows as a pause; a
 * transaction holds the pause (`hold`) until every action is prepared and
 * ends it in its clean phase.
 */
export function startPreparedBackup(bj: BlockJob, hold = false): void {
  assertMainLoop();
  bj.job.start();
  bj.job.pauseInternal();
  if (!hold) bj.job.resumeInternal();
}

/**
 * Checks the arguments, creates the job (status `created`) and inserts the
 * copy-before-write filter: from here on the target keeps the source as it
 * is now. The job does not run until started.
 */
export async function prepareBackup(args: BackupArgs, afterClean?: () => Promise<void>): Promise<BlockJob> {
  assertMainLoop();
  const source = lookupNode(args.device);
  checkNotInJob(source);
  const target = lookupNode(args.target);
  const { sync, bitmap, mode } = checkBackupBitmapArgs(args, source);
  if (source === target) throw QmpError.generic('Source and target cannot be the same');
  // QEMU names the target's BlockBackend, which a node has not.
  if (args.compress && !supportsCompressedWrites(target)) throw QmpError.generic('Compression is not supported for this drive ');
  checkNotInJob(target);
  if (source.length !== target.length) throw QmpError.generic('Source and target image have different sizes');
  checkFilterName(args['filter-node-name']);

  if (target.ctx !== source.ctx) await moveToContext(target, source.ctx, true);

  const params: BackupRunParams = {
    kind: 'backup',
    source: source.name,
    target: target.name,
    sync,
    clusterSize: CLUSTER_SIZE,
    compress: args.compress === true,
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
        filter = undefined;
        if (f) await removeFilter(f, source, [target], async () => b.dropEdges());
        await afterClean?.();
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
  return bj;
}
