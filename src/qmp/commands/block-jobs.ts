/** The block-job commands: blockdev-mirror, blockdev-backup, query-block-jobs and the block-job-* verbs. */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import { allBlockJobs, findBlockJob } from '../../jobs/block-job';
import { startBackup, type BackupArgs } from '../../jobs/backup';
import { startMirror, type MirrorArgs } from '../../jobs/mirror';
import { startCommit, type CommitArgs } from '../../jobs/commit';
import { startStream, type StreamArgs } from '../../jobs/stream';
import { startDriveBackup, type DriveBackupArgs } from '../../jobs/drive-backup';
import { startDriveMirror, type DriveMirrorArgs } from '../../jobs/drive-mirror';

type Device = { device: string };
type Id = { id: string };

export function blockJobCommands() {
  return [
    defineCommand('query-block-jobs', () => allBlockJobs().map((bj) => bj.info())),
    defineCommand<BackupArgs>('blockdev-backup', async (args) => {
      await startBackup(args);
      return {};
    }),
    defineCommand<DriveBackupArgs>('drive-backup', async (args) => {
      await startDriveBackup(args);
      return {};
    }),
    defineCommand<DriveMirrorArgs>('drive-mirror', async (args) => {
      await startDriveMirror(args);
      return {};
    }),
    defineCommand<MirrorArgs>('blockdev-mirror', async (args) => {
      await startMirror(args);
      return {};
    }),
    defineCommand<CommitArgs>('block-commit', async (args) => {
      await startCommit(args);
      return {};
    }),
    defineCommand<StreamArgs>('block-stream', async (args) => {
      await startStream(args);
      return {};
    }),
    defineCommand<Device & { speed: number }>('block-job-set-speed', ({ device, speed }) => {
      const bj = findBlockJob(device);
      bj.job.applyVerb('set-speed');
      bj.setSpeed(speed);
      return {};
    }),
    defineCommand<Device & { force?: boolean }>('block-job-cancel', async ({ device, force }) => {
      const bj = findBlockJob(device);
      if (bj.job.userPaused && !force) throw QmpError.generic(`The block job for device '${device}' is currently paused`);
      await bj.job.cancel(force ?? false);
      return {};
    }),
    defineCommand<Device>('block-job-pause', ({ device }) => {
      findBlockJob(device).job.pause();
      return {};
    }),
    defineCommand<Device>('block-job-resume', ({ device }) => {
      const bj = findBlockJob(device);
      bj.job.resume();
      bj.clearIoStatus();
      return {};
    }),
    defineCommand<Device>('block-job-complete', ({ device }) => {
      findBlockJob(device).job.complete();
      return {};
    }),
    defineCommand<Id>('block-job-dismiss', ({ id }) => {
      findBlockJob(id).job.dismiss();
      return {};
    }),
    defineCommand<Id>('block-job-finalize', async ({ id }) => {
      await findBlockJob(id).job.finalize();
      return {};
    }),
  ];
}
