/**
 * Flushes of a job's target started in the background while the job
 * copies. The kernel then writes the copied data back while the copy goes
 * on, and the flush the job waits for (a mirror's before READY, a commit's
 * or stream's at its end) finds little left to write: the wait that used
 * to follow the copy overlaps it. One background flush at a time, each
 * after `every` bytes were written since the previous one.
 *
 * A background flush that fails is not retried here: its error becomes the
 * error of the next flush the job waits for, so the job reports it (the
 * kernel reports a failed write-back once only; a later flush could pass).
 */
import type { IoNode } from '../../block/io/io-node';
import { flushNode } from '../../block/io/request';

const DEFAULT_EVERY = 32 * 1024 * 1024;

export class WriteBehind {
  private sinceFlush = 0;
  private inFlight: Promise<void> | undefined;
  private failed: { err: unknown } | undefined;

  constructor(
    private readonly target: IoNode,
    private readonly every = DEFAULT_EVERY,
  ) {}

  /** Counts `bytes` written to the target; starts a background flush once enough were. */
  wrote(bytes: number): void {
    this.sinceFlush += bytes;
    if (this.sinceFlush < this.every || this.inFlight) return;
    this.sinceFlush = 0;
    this.inFlight = flushNode(this.target)
      .catch((err: unknown) => {
        this.failed ??= { err };
      })
      .finally(() => {
        this.inFlight = undefined;
      });
  }

  /** Waits for the background flush under way, if any (nothing of the job may stay in flight when it ends). */
  async settle(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  /** Flushes the target and waits for it; a failed background flush fails this one. */
  async flush(): Promise<void> {
    await this.settle();
    this.sinceFlush = 0;
    const failed = this.failed;
    this.failed = undefined;
    if (failed) throw failed.err;
    await flushNode(this.target);
  }
}
