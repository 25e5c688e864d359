/**
 * What every copy loop shares: the pause point, the error policy of
 * on-source-error/on-target-error, and the way back to the control half.
 */
import type { Channel } from '../../common/channel';
import { CANCEL_HARD, jobNotice, type JobControl, type OnError } from '../common/job-control';
import { CopyError } from './copy-range';
import { RateLimiter } from './rate-limit';

export type ErrorOutcome = 'retry' | 'fail';

export abstract class RunBase {
  /** The job's speed limit, read from the shared control block. */
  protected readonly limiter: RateLimiter;

  constructor(
    readonly id: string,
    readonly control: JobControl,
    protected readonly channel: Channel,
    private readonly onSourceError: OnError,
    private readonly onTargetError: OnError,
  ) {
    this.limiter = new RateLimiter(control);
  }

  get hardCancelled(): boolean {
    return this.control.cancel === CANCEL_HARD;
  }

  private change: { seen: number; done: Promise<void> } | undefined;

  /** One shared wait per change counter value, so idle loops do not pile up waiters. */
  controlChanged(seen: number): Promise<void> {
    if (this.change?.seen !== seen) this.change = { seen, done: this.control.waitForChange(Infinity, seen) };
    return this.change.done;
  }

  /** Parks the loop while the control half wants it paused (a hard cancel ends the wait). */
  async pausePoint(): Promise<void> {
    let told = false;
    for (;;) {
      const seen = this.control.wakeSeq();
      if (!this.control.pauseRequested || this.hardCancelled) return;
      this.control.setBusy(false);
      if (!told) {
        // A pause after an error shows in the job's status only from here, as in QEMU.
        told = true;
        this.channel.notify(jobNotice, { id: this.id, what: 'parked' });
      }
      await this.controlChanged(seen);
    }
  }

  /**
   * Applies the error policy to a failed copy: tells the control half
   * (BLOCK_JOB_ERROR), parks the loop for `stop`, and says whether to try
   * the range again or fail the job.
   */
  async onCopyError(err: unknown): Promise<ErrorOutcome> {
    const side = err instanceof CopyError ? err.side : 'target';
    const code = err instanceof CopyError ? err.code : ((err as { code?: string }).code ?? 'EIO');
    const policy = side === 'source' ? this.onSourceError : this.onTargetError;
    const nospace = code === 'ENOSPC';
    const action = policy === 'ignore' ? 'ignore' : policy === 'stop' || (policy === 'enospc' && nospace) ? 'stop' : 'report';
    if (action === 'stop') this.control.parkSelf();
    this.channel.notify(jobNotice, { id: this.id, what: 'error', operation: side === 'source' ? 'read' : 'write', action, nospace });
    if (action === 'report') return 'fail';
    return 'retry';
  }

  /** The message a reported error ends the job with (QEMU's strerror text of the errno). */
  static failure(err: unknown): Error {
    const cause = err instanceof CopyError ? err.reason : err;
    return new Error(errnoText((cause as { code?: string }).code) ?? (cause as Error).message);
  }
}

const ERRNO_TEXT: Record<string, string> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  EPERM: 'Operation not permitted',
  EINVAL: 'Invalid argument',
  ENOTSUP: 'Operation not supported',
  EROFS: 'Read-only file system',
  EFBIG: 'File too large',
};

function errnoText(code: string | undefined): string | undefined {
  return code === undefined ? undefined : ERRNO_TEXT[code];
}
