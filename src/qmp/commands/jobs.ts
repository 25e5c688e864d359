/** The job verbs, query-jobs, blockdev-create (the job that creates images) and x-blockdev-amend (the job that changes their options). */
import { defineCommand } from '../command';
import { allJobs, findJob } from '../../jobs/job-registry';
import { type AmendArgs, startAmendJob } from '../../jobs/amend-job';
import { startCreateJob } from '../../jobs/create-job';
import { blockJobOf } from '../../jobs/block-job';

type JobArgs = { id: string };

export function jobCommands() {
  return [
    defineCommand<JobArgs>('job-pause', ({ id }) => {
      findJob(id).pause();
      return {};
    }),
    defineCommand<JobArgs>('job-resume', ({ id }) => {
      findJob(id).resume();
      blockJobOf(id)?.clearIoStatus();
      return {};
    }),
    defineCommand<JobArgs>('job-cancel', async ({ id }) => {
      await findJob(id).cancel();
      return {};
    }),
    defineCommand<JobArgs>('job-complete', ({ id }) => {
      findJob(id).complete();
      return {};
    }),
    defineCommand<JobArgs>('job-finalize', async ({ id }) => {
      await findJob(id).finalize();
      return {};
    }),
    defineCommand<JobArgs>('job-dismiss', ({ id }) => {
      findJob(id).dismiss();
      return {};
    }),
    defineCommand('query-jobs', () =>
      allJobs().map((j) => {
        blockJobOf(j.id)?.syncProgress();
        return j.info();
      }),
    ),
    defineCommand<{ 'job-id': string; options: Record<string, unknown> }>('blockdev-create', (args) => {
      startCreateJob(args['job-id'], args.options);
      return {};
    }),
    defineCommand<AmendArgs>('x-blockdev-amend', (args) => {
      startAmendJob(args);
      return {};
    }),
  ];
}
