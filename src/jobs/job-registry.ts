/** All jobs by id, in creation order, as query-jobs lists them. */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { Job, type JobDriver, type JobOptions } from './job';

const jobs = new Map<string, Job>();

/** QEMU's id_wellformed(), as job ids must be. */
function checkJobId(id: string): void {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) throw QmpError.generic(`Invalid job ID '${id}'`);
}

export function createJob(id: string, driver: JobDriver, options: JobOptions): Job {
  assertMainLoop();
  checkJobId(id);
  if (jobs.has(id)) throw QmpError.generic(`Job ID '${id}' already in use`);
  const job = new Job(id, driver, options, (j) => jobs.delete(j.id));
  jobs.set(id, job);
  return job;
}

export function findJob(id: string): Job {
  assertMainLoop();
  const job = jobs.get(id);
  if (!job) throw QmpError.generic('Job not found');
  return job;
}

export function allJobs(): Job[] {
  assertMainLoop();
  return [...jobs.values()];
}
