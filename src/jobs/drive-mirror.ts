/**
 * drive-mirror: blockdev-mirror to an image given by filename, created
 * first unless mode is `existing`. The source must be a root node. sync=top
 * without a backing file becomes full; the new image of sync=top gets the
 * source's backing file as backing file, and its backing node reads through
 * to it. The new image of sync=none gets the source itself as backing
 * file, and the source as backing node at the pivot, as in QEMU (which opens
 * it without backing until then).
 * The target stays open after a pivot (it took the source's place) and
 * closes otherwise.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { closeDriveTarget, driveTargetBacking, openDriveTarget, type DriveTargetArgs } from './drive-target';
import { checkNotInJob } from './block-job';
import { lookupNode } from './job-filter';
import { startMirror, type MirrorArgs } from './mirror';

export type DriveMirrorArgs = Omit<MirrorArgs, 'target'> & DriveTargetArgs & { 'node-name'?: string };

export async function startDriveMirror(args: DriveMirrorArgs): Promise<void> {
  assertMainLoop();
  const source = lookupNode(args.device);
  if (source.parents.some((e) => e.parent.kind === 'node')) throw QmpError.generic('Need a root block node');
  checkNotInJob(source);
  // For none the new image is opened without its backing file; the source becomes its backing node at the pivot.
  const { sync, backingOf } = driveTargetBacking(source, args.sync);
  const target = await openDriveTarget({ ...args, nodeName: args['node-name'] }, source, backingOf, sync !== 'none');
  const { 'node-name': _n, format: _f, mode: _m, ...rest } = args;
  try {
    await startMirror({ ...rest, sync, target: target.name }, { targetIsNew: (args.mode ?? 'absolute-paths') !== 'existing', sourceBacksTarget: sync === 'none', afterClean: () => closeDriveTarget(target) });
  } catch (err) {
    await closeDriveTarget(target);
    throw err;
  }
}
