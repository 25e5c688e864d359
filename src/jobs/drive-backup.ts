/**
 * drive-backup: blockdev-backup to an image given by filename, created
 * first unless mode is `existing`. sync=top without a backing file becomes
 * full, as in QEMU; the new image of sync top/none gets the source's
 * backing file (top) or the source (none) as its backing file.
 */
import { assertMainLoop } from '../common/thread-context';
import type { BackupArgs } from './backup';
import { prepareBackup, startPreparedBackup } from './backup';
import type { BlockJob } from './block-job';
import { closeDriveTarget, driveTargetBacking, openDriveTarget, type DriveTargetArgs } from './drive-target';
import { lookupNode } from './job-filter';

export type DriveBackupArgs = Omit<BackupArgs, 'target'> & DriveTargetArgs;

export async function prepareDriveBackup(args: DriveBackupArgs): Promise<BlockJob> {
  assertMainLoop();
  const source = lookupNode(args.device);
  const { sync, backingOf } = driveTargetBacking(source, args.sync);
  const target = await openDriveTarget(args, source, backingOf, false);
  try {
    return await prepareBackup({ ...args, sync, target: target.name }, () => closeDriveTarget(target));
  } catch (err) {
    await closeDriveTarget(target);
    throw err;
  }
}

export async function startDriveBackup(args: DriveBackupArgs): Promise<void> {
  startPreparedBackup(await prepareDriveBackup(args));
}
