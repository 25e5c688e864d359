/**
 * The run halves of block jobs in one I/O context: set up on `job.prepare`,
 * run on `job.run`, asked for the final copy inside the control half's
 * drained section, and released when the job's graph changes are undone.
 */
import { assertIoContext } from '../../common/thread-context';
import type { IoContextRuntime } from '../../block/io/context-services';
import { JobControl, jobFinalCopy, jobPrepare, jobRelease, jobRun } from '../common/job-control';
import { BackupRun } from './backup-run';
import { MirrorRun } from './mirror-run';
import { ChainCopyRun } from './chain-copy-run';

export function installJobService(rt: IoContextRuntime): void {
  assertIoContext();
  const runs = new Map<string, MirrorRun | BackupRun | ChainCopyRun>();
  const find = (id: string): MirrorRun | BackupRun | ChainCopyRun => {
    const run = runs.get(id);
    if (!run) throw new Error(`no run half for job ${id}`);
    return run;
  };

  rt.channel.onRequest(jobPrepare, ({ id, control, params }) => {
    if (runs.has(id)) throw new Error(`job ${id} already has a run half`);
    const ctl = new JobControl(control);
    const source = rt.graph.get(params.source);
    const target = rt.graph.get(params.target);
    if (params.kind === 'mirror') runs.set(id, new MirrorRun(id, ctl, rt.channel, source, target, params));
    else if (params.kind === 'backup') runs.set(id, new BackupRun(id, ctl, rt.channel, source, target, params));
    else runs.set(id, new ChainCopyRun(id, ctl, rt.channel, source, target, params));
  });
  rt.channel.onRequest(jobRun, ({ id }) => find(id).run());
  rt.channel.onRequest(jobFinalCopy, ({ id }) => find(id).finalCopy());
  rt.channel.onRequest(jobRelease, ({ id }) => {
    runs.get(id)?.release();
    runs.delete(id);
  });
}
