/**
 * The job core: the two tables, the order of JOB_STATUS_CHANGE events, and
 * the errors a verb gets in a status where it is not accepted.
 */
import { describe, expect, it } from 'vitest';
import { addEventSink, removeEventSink, type QmpEvent } from '../../src/qmp/events';
import { JOB_STATUSES, JOB_VERBS, TRANSITIONS, VERBS, canTransition, verbAllowed } from '../../src/jobs/job-status';
import { createJob, findJob } from '../../src/jobs/job-registry';
import type { Job, JobDriver } from '../../src/jobs/job';

function recordEvents(): { statuses: (id: string) => string[]; stop: () => void } {
  const seen: QmpEvent[] = [];
  const sink = { sendEvent: (ev: QmpEvent) => seen.push(ev) };
  addEventSink(sink);
  return {
    statuses: (id) => seen.filter((e) => e.event === 'JOB_STATUS_CHANGE' && (e.data as { id: string }).id === id).map((e) => (e.data as { status: string }).status),
    stop: () => removeEventSink(sink),
  };
}

function until(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => (cond() ? resolve() : setTimeout(poll, 2));
    poll();
  });
}

function driver(run: (job: Job) => Promise<void>, extra: Partial<JobDriver> = {}): JobDriver {
  return { type: 'create', run, ...extra };
}

describe('the job tables', () => {
  it('cover every status and every verb', () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...JOB_STATUSES].sort());
    expect(Object.keys(VERBS).sort()).toEqual([...JOB_VERBS].sort());
  });

  it('allow the lifecycle QEMU documents and nothing that skips a step', () => {
    expect(canTransition('created', 'running')).toBe(true);
    expect(canTransition('running', 'waiting')).toBe(true);
    expect(canTransition('waiting', 'pending')).toBe(true);
    expect(canTransition('pending', 'concluded')).toBe(true);
    expect(canTransition('concluded', 'null')).toBe(true);
    expect(canTransition('running', 'concluded')).toBe(false);
    expect(canTransition('null', 'created')).toBe(false);
    expect(verbAllowed('dismiss', 'concluded')).toBe(true);
    expect(verbAllowed('complete', 'running')).toBe(false);
  });
});

describe('a job', () => {
  it('goes created, running, waiting, pending, concluded, and null once dismissed', async () => {
    const ev = recordEvents();
    const job = createJob('ok1', driver(async () => undefined), { autoFinalize: true, autoDismiss: false });
    job.start();
    await until(() => job.status === 'concluded');
    job.dismiss();
    expect(ev.statuses('ok1')).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(() => findJob('ok1')).toThrow('Job not found');
    ev.stop();
  });

  it('goes through aborting when its run fails, and keeps the error for query-jobs', async () => {
    const ev = recordEvents();
    const order: string[] = [];
    const job = createJob('bad1', driver(async () => { throw new Error('disk on fire'); }, { abort: () => void order.push('abort'), commit: () => void order.push('commit'), clean: () => void order.push('clean') }), { autoFinalize: true, autoDismiss: false });
    job.start();
    await until(() => job.status === 'concluded');
    expect(ev.statuses('bad1')).toEqual(['created', 'running', 'aborting', 'concluded']);
    expect(order).toEqual(['abort', 'clean']);
    expect(job.info()).toMatchObject({ id: 'bad1', status: 'concluded', error: 'disk on fire' });
    ev.stop();
  });

  it('waits in pending without auto-finalize, then commits and cleans on finalize', async () => {
    const ev = recordEvents();
    const order: string[] = [];
    const job = createJob('fin1', driver(async () => undefined, { commit: () => void order.push('commit'), clean: () => void order.push('clean') }), { autoFinalize: false, autoDismiss: true });
    job.start();
    await until(() => job.status === 'pending');
    expect(order).toEqual([]);
    await job.finalize();
    expect(order).toEqual(['commit', 'clean']);
    expect(ev.statuses('fin1')).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    ev.stop();
  });

  it('refuses verbs in statuses that do not accept them, naming job, status and verb', async () => {
    const job = createJob('v1', driver(async () => undefined), { autoFinalize: true, autoDismiss: false });
    job.start();
    await until(() => job.status === 'concluded');
    expect(() => job.pause()).toThrow("Job 'v1' in state 'concluded' cannot accept command verb 'pause'");
    expect(() => job.cancel()).toThrow("Job 'v1' in state 'concluded' cannot accept command verb 'cancel'");
    expect(() => job.complete()).toThrow("Job 'v1' in state 'concluded' cannot accept command verb 'complete'");
    await expect(job.finalize()).rejects.toThrow("Job 'v1' in state 'concluded' cannot accept command verb 'finalize'");
    expect(() => job.resume()).toThrow("Can't resume a job that was not paused");
    job.dismiss();
  });

  it('refuses a duplicate or malformed id', () => {
    createJob('dup', driver(async () => undefined), { autoFinalize: true, autoDismiss: true });
    expect(() => createJob('dup', driver(async () => undefined), { autoFinalize: true, autoDismiss: true })).toThrow("Job ID 'dup' already in use");
    expect(() => createJob('bad id', driver(async () => undefined), { autoFinalize: true, autoDismiss: true })).toThrow("Invalid job ID 'bad id'");
  });
});

describe('a job group', () => {
  it('keeps members in waiting until all have run, then pending and finalized together, newest first', async () => {
    const { JobGroup } = await import('../../src/jobs/job');
    const ev = recordEvents();
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const order: string[] = [];
    const g = new JobGroup();
    const a = createJob('ga', driver(async () => undefined, { commit: () => void order.push('commit ga') }), { autoFinalize: true, autoDismiss: true });
    const b = createJob('gb', driver(() => slow, { commit: () => void order.push('commit gb') }), { autoFinalize: true, autoDismiss: true });
    g.add(a);
    g.add(b);
    a.start();
    b.start();
    await until(() => a.status === 'waiting');
    expect(b.status).toBe('running');
    release();
    await until(() => a.status === 'null' && b.status === 'null');
    expect(ev.statuses('ga')).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(ev.statuses('gb')).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(order).toEqual(['commit gb', 'commit ga']);
    ev.stop();
  });

  it('cancels the other members when one fails, and aborts all of them', async () => {
    const { JobGroup } = await import('../../src/jobs/job');
    const ev = recordEvents();
    const aborted: string[] = [];
    const g = new JobGroup();
    const waitForCancel = (j: Job) => until(() => j.isCancelled);
    const a = createJob('fa', driver(waitForCancel, { abort: () => void aborted.push('fa') }), { autoFinalize: true, autoDismiss: true });
    const b = createJob('fb', driver(async () => Promise.reject(new Error('boom')), { abort: () => void aborted.push('fb') }), { autoFinalize: true, autoDismiss: true });
    g.add(a);
    g.add(b);
    a.start();
    b.start();
    await until(() => a.status === 'null' && b.status === 'null');
    expect(b.error).toBe('boom');
    expect(a.error).toBe('Operation canceled');
    expect(aborted).toEqual(['fb', 'fa']);
    expect(ev.statuses('fb')).toEqual(['created', 'running', 'aborting', 'concluded', 'null']);
    expect(ev.statuses('fa')).toEqual(['created', 'running', 'aborting', 'concluded', 'null']);
    ev.stop();
  });

  it('aborts a job that never started without running it', async () => {
    const ev = recordEvents();
    let ran = false;
    const j = createJob('never', driver(async () => void (ran = true)), { autoFinalize: true, autoDismiss: true });
    j.create();
    await j.abortUnstarted();
    expect(ran).toBe(false);
    expect(ev.statuses('never')).toEqual(['created', 'aborting', 'concluded', 'null']);
    ev.stop();
  });
});
