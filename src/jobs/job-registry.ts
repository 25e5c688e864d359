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

/**
 * At exit: cancels every job that has not concluded and waits (bounded)
 * until each has, so its graph changes are undone before nodes close —
 * QEMU's job_cancel_sync_all().
 */
export async function cancelAllJobs(timeoutMs = 10_000): Promise<void> {
  assertMainLoop();
  const live = (j: Job): boolean => j.status !== 'concluded' && j.status !== 'null' && j.status !== 'undefined';
  const running = [...jobs.values()].filter(live);
  for (const job of running) {
    try {
      void job.cancel(true)?.catch(() => undefined);
    } catch {
      // A job in a status that takes no cancel finishes on its own.
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (running.some(live) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}
