/**
 * The parts of the block-job layer on their own: the dirty bitmap, the
 * shared control block, and the job core's pause, ready and cancel rules.
 */
import { describe, expect, it } from 'vitest';
import { DirtyBitmap } from '../../src/block/io/dirty-bitmap';
import { CANCEL_HARD, CANCEL_SOFT, JobControl } from '../../src/jobs/common/job-control';
import { createJob } from '../../src/jobs/job-registry';
import type { Job, JobDriver } from '../../src/jobs/job';
import { addEventSink, removeEventSink, type QmpEvent } from '../../src/qmp/events';

function until(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => (cond() ? resolve() : setTimeout(poll, 2));
    poll();
  });
}

function statuses(id: string): { list: () => string[]; stop: () => void } {
  const seen: QmpEvent[] = [];
  const sink = { sendEvent: (ev: QmpEvent) => seen.push(ev) };
  addEventSink(sink);
  return {
    list: () => seen.filter((e) => (e.data as { id?: string }).id === id).map((e) => (e.data as { status: string }).status),
    stop: () => removeEventSink(sink),
  };
}

describe('the dirty bitmap', () => {
  it('marks whole granules, counts bytes with a short last granule, and finds dirty runs', () => {
    const b = new DirtyBitmap(10 * 65536 + 100, 65536);
    expect(b.chunks).toBe(11);
    b.set(65536 + 1, 10);
    expect(b.count).toBe(65536);
    b.set(10 * 65536, 1);
    expect(b.count).toBe(65536 + 100);
    expect(b.nextDirty(0)).toBe(1);
    expect(b.nextDirty(2)).toBe(10);
    b.set(2 * 65536, 3 * 65536);
    expect(b.runEnd(1, 100)).toBe(5);
    expect(b.runEnd(1, 2)).toBe(3);
    b.clearChunks(1, 5);
    expect(b.nextDirty(0)).toBe(10);
    b.clearChunks(10, 11);
    expect(b.count).toBe(0);
    expect(b.nextDirty(0)).toBe(-1);
  });

  it('wakes a waiter when a clean granule becomes dirty', async () => {
    const b = new DirtyBitmap(1 << 20, 4096);
    let woken = false;
    void b.whenDirtied().then(() => (woken = true));
    b.set(0, 1);
    await until(() => woken);
    expect(b.nextDirty(33)).toBe(-1);
    b.set(40 * 4096, 4096);
    expect(b.nextDirty(33)).toBe(40);
  });
});

describe('the control block', () => {
  it('carries flags, speed and progress between two views of one buffer', async () => {
    const control = new JobControl();
    const other = new JobControl(control.buffer);
    const seen = other.wakeSeq();
    control.setPaused(true);
    control.setSpeed(5 * 1024 * 1024);
    expect(other.pauseRequested).toBe(true);
    expect(other.speed).toBe(5 * 1024 * 1024);
    await other.waitForChange(Infinity, seen);
    control.requestCancel(CANCEL_HARD);
    control.requestCancel(CANCEL_SOFT);
    expect(other.cancel).toBe(CANCEL_HARD);
    other.setProgress(3 * 2 ** 40, 4 * 2 ** 40);
    expect([control.offset, control.len]).toEqual([3 * 2 ** 40, 4 * 2 ** 40]);
  });

  it('ends a timed wait without a change', async () => {
    const control = new JobControl();
    const t0 = performance.now();
    await control.waitForChange(30);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
  });
});

describe('the job core for jobs that pause and get ready', () => {
  function readyJob(id: string, extra: Partial<JobDriver> = {}): { job: Job; finish: () => void } {
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    const job = createJob(id, { type: 'mirror', run: () => done, complete: () => finish(), ...extra }, { autoFinalize: true, autoDismiss: true });
    return { job, finish };
  }

  it('goes standby when paused in ready, accepts complete there, and completes after the resume', async () => {
    const ev = statuses('r1');
    const { job } = readyJob('r1');
    job.start();
    job.setReady();
    job.pause();
    expect(job.status).toBe('standby');
    job.complete();
    await new Promise((r) => setTimeout(r, 20));
    expect(job.status).toBe('standby');
    job.resume();
    await until(() => job.status === 'null');
    expect(ev.list()).toEqual(['created', 'running', 'ready', 'standby', 'ready', 'waiting', 'pending', 'concluded', 'null']);
    ev.stop();
  });

  it('treats a soft cancel after ready as completion, and a cancel of a paused job resumes it first', async () => {
    const ev = statuses('r2');
    const { job, finish } = readyJob('r2', { cancel: (j, force) => force || !j.isReady });
    job.start();
    job.pause();
    job.cancel(true);
    expect(job.isCancelled).toBe(true);
    finish();
    await until(() => job.status === 'null');
    expect(ev.list()).toEqual(['created', 'running', 'paused', 'running', 'aborting', 'concluded', 'null']);
    expect(job.error).toBe('Operation canceled');
    ev.stop();

    const ev3 = statuses('r3');
    const soft = readyJob('r3', { cancel: (j, force) => force || !j.isReady });
    soft.job.start();
    soft.job.setReady();
    soft.job.cancel(false);
    expect(soft.job.isCancelled).toBe(false);
    soft.finish();
    await until(() => soft.job.status === 'null');
    expect(ev3.list()).toEqual(['created', 'running', 'ready', 'waiting', 'pending', 'concluded', 'null']);
    ev3.stop();
  });

  it('shows an error pause in the status only once the run reaches its pause point', () => {
    const { job } = readyJob('r4');
    job.start();
    job.userPaused = true;
    job.pauseInternal(true);
    expect(job.paused).toBe(true);
    expect(job.status).toBe('running');
    job.reachedPausePoint();
    expect(job.status).toBe('paused');
    job.cancel();
  });
});
