/**
 * The control half of a job, on the main loop: its status, the verbs, and
 * the QMP events. Status changes go through `transition()`, the one place
 * that emits JOB_STATUS_CHANGE. The job's work is its driver's `run`; what
 * happens after it follows QEMU's order: waiting, pending, then (once
 * finalized) commit or abort, clean, concluded, and null once dismissed.
 *
 * Pausing is counted: a user pause and internal pauses (an error with
 * on-*-error=stop) add up, and the job leaves `paused`/`standby` only when
 * the count drops to zero. A job whose run ends while it is paused waits
 * for its resume before it completes, as a QEMU job parked at a pause point.
 *
 * Completion goes through the job's group (`JobGroup`, QEMU's JobTxn): a
 * group of one unless a grouped transaction put jobs together; members
 * finalize together and abort together.
 */
import { assertMainLoop } from '../common/thread-context';
import { log } from '../common/log';
import { QmpError } from '../qmp/errors';
import { emitEvent } from '../qmp/events';
import { runExclusive } from '../qmp/gs-queue';
import { canTransition, verbAllowed, type JobStatus, type JobVerb } from './job-status';

/** QEMU's strerror(ECANCELED), which query-jobs shows for a cancelled job. */
export const CANCELLED_ERROR = 'Operation canceled';

/** What a kind of job does. Callbacks run in this order: run, then exactly one of commit/abort, then clean. */
export interface JobDriver {
  readonly type: string;
  run(job: Job): Promise<void>;
  commit?(job: Job): Promise<void> | void;
  abort?(job: Job): Promise<void> | void;
  clean?(job: Job): Promise<void> | void;
  /** job-complete, for jobs that reach `ready`. */
  complete?(job: Job): void;
  /**
   * A cancel request; returns whether it is a hard cancel. Without this
   * callback every cancel is hard. A soft cancel (mirror after READY) ends
   * the job as completed, without its final step.
   */
  cancel?(job: Job, force: boolean): boolean;
  /** The pause count went from 0 to 1 (true) or back to 0 (false). */
  pauseChanged?(job: Job, paused: boolean): void;
  /** The job is gone (dismissed, or failed before it started): what it held until then is released (QEMU's .free). */
  free?(job: Job): void;
}

/** Extra events of a kind of job, emitted at QEMU's points (block jobs use these). */
export interface JobEventHooks {
  /** After the transition to `ready`. */
  ready?(job: Job): void;
  /** After the transition to `pending`, when the job does not finalize itself. */
  pending?(job: Job): void;
  /** After commit or abort and clean, before `concluded`. */
  finished?(job: Job): void;
}

export interface JobOptions {
  autoFinalize: boolean;
  autoDismiss: boolean;
}

export class Job {
  status: JobStatus = 'undefined';
  progressCurrent = 0;
  progressTotal = 0;
  error: string | undefined;
  /** A cancel was requested (soft or hard). */
  cancelled = false;
  /** The cancel is hard: the job aborts. */
  forceCancel = false;
  userPaused = false;
  hooks: JobEventHooks = {};
  /** The jobs that complete with this one (QEMU's JobTxn); alone unless a grouped transaction made it. */
  group: JobGroup = new JobGroup(this);
  /** The run (and any pause it ended in) is over; the group may not have finalized the job yet. */
  runEnded = false;
  /** Set once the group has begun this job's commit or abort. */
  finalizing = false;
  private pauseCount = 0;
  private resumeWaiters: Array<() => void> = [];
  private hasStarted = false;
  private announceRunEnd: () => void = () => undefined;
  private readonly runEnd = new Promise<void>((resolve) => (this.announceRunEnd = resolve));

  constructor(
    readonly id: string,
    readonly driver: JobDriver,
    readonly options: JobOptions,
    private readonly onGone: (job: Job) => void,
  ) {}

  get type(): string {
    return this.driver.type;
  }

  /** Whether `start` ran (QEMU's job_started). */
  get started(): boolean {
    return this.hasStarted;
  }

  get paused(): boolean {
    return this.pauseCount > 0;
  }

  /** Whether the job ends as cancelled (QEMU's job_is_cancelled). */
  get isCancelled(): boolean {
    return this.cancelled && this.forceCancel;
  }

  /** The one place a status changes and JOB_STATUS_CHANGE is emitted. */
  transition(to: JobStatus): void {
    assertMainLoop();
    if (!canTransition(this.status, to)) throw new Error(`job ${this.id}: illegal transition ${this.status} -> ${to}`);
    this.status = to;
    emitEvent('JOB_STATUS_CHANGE', { id: this.id, status: to });
  }

  /** Checks a client's verb against the verb table. */
  applyVerb(verb: JobVerb): void {
    assertMainLoop();
    if (!verbAllowed(verb, this.status)) {
      throw QmpError.generic(`Job '${this.id}' in state '${this.status}' cannot accept command verb '${verb}'`);
    }
  }

  /** Enters `created` only: for jobs whose setup can still fail (then `failEarly`). */
  create(): void {
    assertMainLoop();
    this.transition('created');
  }

  /** A job that failed before it started goes straight to null, as QEMU's job_early_fail. */
  failEarly(): void {
    assertMainLoop();
    this.transition('null');
    this.onGone(this);
    this.driver.free?.(this);
  }

  /** Creates the job's status (unless `create` did) and starts its run. */
  start(): void {
    assertMainLoop();
    if (this.status === 'undefined') this.transition('created');
    this.hasStarted = true;
    this.transition('running');
    void this.runToEnd();
  }

  /** The run reports that all data is copied and the job waits for complete (mirror). */
  setReady(): void {
    assertMainLoop();
    if (this.status !== 'running' && this.status !== 'paused') return;
    if (this.status === 'paused') {
      // Readiness reached while paused shows once the job resumes, as at QEMU's next pause point.
      this.readyWhenResumed = true;
      return;
    }
    this.transition('ready');
    this.hooks.ready?.(this);
  }

  private readyWhenResumed = false;

  get isReady(): boolean {
    return this.status === 'ready' || this.status === 'standby';
  }

  /**
   * Adds a pause (user or internal). The status follows at once, or, with
   * `statusAtPausePoint`, once the run reports that it reached its pause
   * point (`reachedPausePoint`).
   */
  pauseInternal(statusAtPausePoint = false): void {
    assertMainLoop();
    if (this.pauseCount++ > 0) return;
    if (!statusAtPausePoint) this.reachedPausePoint();
    this.driver.pauseChanged?.(this, true);
  }

  /** The run stopped at a pause point: a paused job shows it now. */
  reachedPausePoint(): void {
    assertMainLoop();
    if (!this.paused) return;
    if (this.status === 'running') this.transition('paused');
    else if (this.status === 'ready') this.transition('standby');
  }

  /** Drops a pause; the last one lets the job run again. */
  resumeInternal(): void {
    assertMainLoop();
    if (this.pauseCount === 0 || --this.pauseCount > 0) return;
    if (this.status === 'paused') this.transition('running');
    else if (this.status === 'standby') this.transition('ready');
    this.driver.pauseChanged?.(this, false);
    if (this.readyWhenResumed) {
      this.readyWhenResumed = false;
      this.setReady();
    }
    const waiters = this.resumeWaiters;
    this.resumeWaiters = [];
    for (const w of waiters) w();
  }

  private async runToEnd(): Promise<void> {
    try {
      await this.driver.run(this);
    } catch (err) {
      this.error = (err as Error).message;
    }
    // A job parked at a pause point completes only after its resume.
    while (this.paused && !this.isCancelled) await new Promise<void>((resolve) => this.resumeWaiters.push(resolve));
    if (this.isCancelled && this.error === undefined) this.error = CANCELLED_ERROR;
    this.runEnded = true;
    this.announceRunEnd();
    try {
      // Completion may change the graph: take the queue QMP commands take.
      await runExclusive(() => this.group.runEnded(this));
    } catch (err) {
      log.error({ job: this.id, err: (err as Error).message }, 'job completion failed');
    }
  }

  /** Resolves once the run is over (at once for a job that never started). */
  whenRunEnded(): Promise<void> {
    return this.started ? this.runEnd : Promise.resolve();
  }

  /** `waiting`, then `pending` once the whole group waits (called by the group). */
  enterWaiting(): void {
    this.transition('waiting');
  }

  enterPending(): void {
    this.transition('pending');
    if (!this.options.autoFinalize) this.hooks.pending?.(this);
  }

  /** A failed or cancelled job shows `aborting` (QEMU's job_update_rc). */
  markAborting(): void {
    if (this.isCancelled) this.error ??= CANCELLED_ERROR;
    if (this.error !== undefined && this.status !== 'aborting') this.transition('aborting');
  }

  /** Commit or abort, clean, the block-job event, concluded (QEMU's job_finalize_single). */
  async finalizeSingle(): Promise<void> {
    if (this.finalizing) return;
    this.finalizing = true;
    this.markAborting();
    if (this.error === undefined) {
      try {
        await this.driver.commit?.(this);
      } catch (err) {
        this.error = (err as Error).message;
        this.transition('aborting');
      }
    }
    if (this.error !== undefined) {
      try {
        await this.driver.abort?.(this);
      } finally {
        await this.driver.clean?.(this);
      }
    } else {
      await this.driver.clean?.(this);
    }
    // Events tell about jobs that ran; one aborted before its start leaves only status changes.
    if (this.started) this.hooks.finished?.(this);
    this.conclude();
  }

  /**
   * Aborts a job that was created but never started (a transaction that
   * failed after preparing it): aborting, concluded, and null if it dismisses
   * itself; the rest of its group goes with it.
   */
  async abortUnstarted(): Promise<void> {
    assertMainLoop();
    if (this.started || this.finalizing) return;
    this.cancelled = true;
    this.forceCancel = true;
    this.markAborting();
    await this.group.abort(this);
  }

  private conclude(): void {
    this.transition('concluded');
    if (this.options.autoDismiss) this.dismissNow();
  }

  private dismissNow(): void {
    this.transition('null');
    this.onGone(this);
    this.driver.free?.(this);
  }

  /** Asks the job to stop (QEMU's job_cancel_async); the driver says whether the cancel is hard. */
  requestCancel(force: boolean): void {
    const hard = this.driver.cancel ? this.driver.cancel(this, force) : true;
    if (this.userPaused) {
      this.userPaused = false;
      this.resumeInternal();
    }
    this.cancelled = true;
    this.forceCancel ||= hard;
    const waiters = this.resumeWaiters;
    this.resumeWaiters = [];
    for (const w of waiters) w();
  }

  // Verbs. Each checks the verb table first, as QEMU's job_apply_verb() does.

  pause(): void {
    this.applyVerb('pause');
    if (this.userPaused) throw QmpError.generic('Job is already paused');
    this.userPaused = true;
    this.pauseInternal();
  }

  resume(): void {
    if (!this.userPaused) throw QmpError.generic(`Can't resume a job that was not paused`);
    this.applyVerb('resume');
    this.userPaused = false;
    this.resumeInternal();
  }

  /**
   * job-cancel is always hard; block-job-cancel passes its `force`. A job
   * whose run is over (waiting, pending) aborts at once with its group: the
   * returned promise ends with it.
   */
  cancel(force = true): Promise<void> | undefined {
    this.applyVerb('cancel');
    this.requestCancel(force);
    if (this.runEnded && this.isCancelled && !this.finalizing) {
      // Inside the command's turn of the queue.
      return this.group.abort(this);
    }
    return undefined;
  }

  complete(): void {
    this.applyVerb('complete');
    if (this.cancelled || !this.driver.complete) throw QmpError.generic(`The active block job '${this.id}' cannot be completed`);
    this.driver.complete(this);
  }

  async finalize(): Promise<void> {
    this.applyVerb('finalize');
    await this.group.finalize();
  }

  dismiss(): void {
    this.applyVerb('dismiss');
    this.dismissNow();
  }

  info(): Record<string, unknown> {
    const info: Record<string, unknown> = {
      id: this.id,
      type: this.type,
      status: this.status,
      'current-progress': this.progressCurrent,
      'total-progress': this.progressTotal,
    };
    if (this.error !== undefined) info.error = this.error;
    return info;
  }
}

/**
 * Jobs that complete together (QEMU's JobTxn), made by a `transaction` with
 * completion-mode `grouped`; every other job is a group of one. Members wait
 * in `waiting` until all have run, go `pending` together and finalize
 * together; when one fails or is cancelled, the others are cancelled and all
 * abort. Members are finalized newest first, as QEMU walks its list.
 */
export class JobGroup {
  private readonly members: Job[] = [];
  private aborting = false;

  constructor(first?: Job) {
    if (first) this.members.push(first);
  }

  /** Moves a job that has not started into this group. */
  add(job: Job): void {
    assertMainLoop();
    if (job.started) throw new Error(`job ${job.id} joins a group after its start`);
    const old = job.group;
    old.members.splice(old.members.indexOf(job), 1);
    this.members.push(job);
    job.group = this;
  }

  private newestFirst(): Job[] {
    return [...this.members].reverse();
  }

  /** A member's run is over (inside the GS queue). */
  async runEnded(job: Job): Promise<void> {
    assertMainLoop();
    if (job.finalizing) return;
    if (job.error !== undefined || job.isCancelled) {
      job.markAborting();
      if (!this.aborting) await this.abort(job);
      return;
    }
    job.enterWaiting();
    if (this.aborting || this.members.some((m) => !m.runEnded)) return;
    for (const m of this.newestFirst()) m.enterPending();
    if (this.members.every((m) => m.options.autoFinalize)) await this.finalize();
  }

  /** job-finalize of a member, or the automatic finalize: every member commits (or aborts), then concludes. */
  async finalize(): Promise<void> {
    assertMainLoop();
    for (const m of this.newestFirst()) await finalizeLogged(m);
  }

  /** `cause` failed or was cancelled: the other members are cancelled, waited for, and all abort. */
  async abort(cause: Job): Promise<void> {
    assertMainLoop();
    if (this.aborting) return;
    this.aborting = true;
    for (const m of this.members) if (m !== cause && !m.finalizing) m.requestCancel(true);
    for (const m of this.newestFirst()) {
      await m.whenRunEnded();
      await finalizeLogged(m);
    }
  }
}

/** One member's failure to finalize must not leave the others unfinalized. */
async function finalizeLogged(job: Job): Promise<void> {
  try {
    await job.finalizeSingle();
  } catch (err) {
    log.error({ job: job.id, err: (err as Error).message }, 'job finalization failed');
  }
}
