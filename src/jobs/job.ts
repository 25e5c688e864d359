/**
 * The control half of a job, on the main loop: its status, the verbs, and
 * the QMP events. Status changes go through `transition()`, the one place
 * that emits JOB_STATUS_CHANGE. The job's work is its driver's `run`; what
 * happens after it follows QEMU's order: waiting, pending, then (once
 * finalized) commit or abort, clean, concluded, and null once dismissed.
 */
import { assertMainLoop } from '../common/thread-context';
import { log } from '../common/log';
import { QmpError } from '../qmp/errors';
import { emitEvent } from '../qmp/events';
import { canTransition, verbAllowed, type JobStatus, type JobVerb } from './job-status';

/** What a kind of job does. Callbacks run in this order: run, then exactly one of commit/abort, then clean. */
export interface JobDriver {
  readonly type: string;
  run(job: Job): Promise<void>;
  commit?(job: Job): Promise<void> | void;
  abort?(job: Job): Promise<void> | void;
  clean?(job: Job): Promise<void> | void;
  /** job-complete, for jobs that reach `ready`. */
  complete?(job: Job): void;
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
  cancelled = false;
  userPaused = false;
  private pauseCount = 0;

  constructor(
    readonly id: string,
    readonly driver: JobDriver,
    readonly options: JobOptions,
    private readonly onGone: (job: Job) => void,
  ) {}

  get type(): string {
    return this.driver.type;
  }

  get paused(): boolean {
    return this.pauseCount > 0;
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

  /** Creates the job's status and starts its run; resolves once it is running. */
  start(): void {
    assertMainLoop();
    this.transition('created');
    this.transition('running');
    void this.runToEnd();
  }

  private async runToEnd(): Promise<void> {
    try {
      await this.driver.run(this);
    } catch (err) {
      this.error = (err as Error).message;
    }
    if (this.cancelled && !this.error) this.error = 'Operation cancelled';
    try {
      if (this.error === undefined) {
        this.transition('waiting');
        this.transition('pending');
        if (this.options.autoFinalize) await this.finalizeNow();
      } else {
        await this.abortNow();
      }
    } catch (err) {
      log.error({ job: this.id, err: (err as Error).message }, 'job completion failed');
    }
  }

  private async finalizeNow(): Promise<void> {
    try {
      await this.driver.commit?.(this);
    } catch (err) {
      this.error = (err as Error).message;
      return this.abortNow();
    }
    await this.driver.clean?.(this);
    this.conclude();
  }

  private async abortNow(): Promise<void> {
    this.transition('aborting');
    try {
      await this.driver.abort?.(this);
    } finally {
      await this.driver.clean?.(this);
    }
    this.conclude();
  }

  private conclude(): void {
    this.transition('concluded');
    if (this.options.autoDismiss) this.dismissNow();
  }

  private dismissNow(): void {
    this.transition('null');
    this.onGone(this);
  }

  // Verbs. Each checks the verb table first, as QEMU's job_apply_verb() does.

  pause(): void {
    this.applyVerb('pause');
    if (this.userPaused) throw QmpError.generic('Job is already paused');
    this.userPaused = true;
    this.pauseCount++;
  }

  resume(): void {
    if (!this.userPaused) throw QmpError.generic(`Can't resume a job that was not paused`);
    this.applyVerb('resume');
    this.userPaused = false;
    this.pauseCount--;
  }

  cancel(): void {
    this.applyVerb('cancel');
    this.cancelled = true;
  }

  complete(): void {
    this.applyVerb('complete');
    if (this.cancelled || !this.driver.complete) throw QmpError.generic(`The active block job '${this.id}' cannot be completed`);
    this.driver.complete(this);
  }

  async finalize(): Promise<void> {
    this.applyVerb('finalize');
    await this.finalizeNow();
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
