/**
 * The backup actions of `transaction` (blockdev-backup, drive-backup). A
 * job is created in prepare with its source drained, so every backup of one
 * transaction keeps the same point in time; it starts in commit, paused
 * until the clean phase ends the drain; abort removes the unstarted job
 * (aborting, concluded, null, and no block-job event). With completion-mode
 * grouped, the transaction's jobs form one job group.
 */
import { assertMainLoop } from '../common/thread-context';
import { drainedBegin, drainedEnd, type DrainToken } from '../block/global-state/drain';
import { registerTransactionAction, type TransactionContext } from '../qmp/transaction-actions';
import { prepareBackup, startPreparedBackup, type BackupArgs } from './backup';
import type { BlockJob } from './block-job';
import { prepareDriveBackup, type DriveBackupArgs } from './drive-backup';
import { JobGroup } from './job';
import { lookupNode } from './job-filter';

const GROUP_KEY = 'job-group';

function groupOf(ctx: TransactionContext): JobGroup {
  let group = ctx.shared.get(GROUP_KEY) as JobGroup | undefined;
  if (!group) {
    group = new JobGroup();
    ctx.shared.set(GROUP_KEY, group);
  }
  return group;
}

function backupAction<A extends { device: string }>(prepareJob: (args: A) => Promise<BlockJob>) {
  return (args: A, ctx: TransactionContext) => {
    let bj: BlockJob | undefined;
    let drain: DrainToken | undefined;
    return {
      async prepare() {
        assertMainLoop();
        drain = await drainedBegin([lookupNode(args.device)]);
        try {
          bj = await prepareJob(args);
        } catch (err) {
          await drainedEnd(drain);
          drain = undefined;
          throw err;
        }
        if (ctx.completionMode === 'grouped') groupOf(ctx).add(bj.job);
      },
      commit() {
        startPreparedBackup(bj!, true);
      },
      async abort() {
        await bj?.job.abortUnstarted();
      },
      async clean() {
        if (bj?.job.started) bj.job.resumeInternal();
        if (drain) await drainedEnd(drain);
      },
    };
  };
}

registerTransactionAction('blockdev-backup', backupAction<BackupArgs>(prepareBackup));
registerTransactionAction('drive-backup', backupAction<DriveBackupArgs>(prepareDriveBackup));
