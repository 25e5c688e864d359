/**
 * The run half's rate limit (`speed`, bytes per second). A request of n
 * bytes may start only once n / speed seconds have passed since the
 * previous one's slot, so over any interval the bytes started stay within
 * speed × interval plus one request; requests are kept to a twentieth of a
 * second's worth, which keeps any interval of a second or more within 5%.
 * An idle limiter builds up no credit. Sleeps end early on pause, cancel
 * or a new speed.
 */
import type { JobControl } from '../common/job-control';
import { CANCEL_HARD } from '../common/job-control';

export class RateLimiter {
  private next = 0;

  constructor(
    private readonly control: JobControl,
    /** The clock, in milliseconds (tests pass their own). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Largest request size that keeps the limit tight at the current speed (0: no limit). */
  requestCap(granularity: number): number {
    const speed = this.control.speed;
    if (speed <= 0) return 0;
    return Math.max(granularity, Math.floor(speed / 20 / granularity) * granularity);
  }

  /**
   * Waits for the slot of a request of `bytes`; returns false, without
   * taking the slot, when a pause or hard cancel is requested before or
   * while it waits (the caller then goes to its pause point).
   */
  async take(bytes: number): Promise<boolean> {
    // Where this request's slot counts from; kept across wake-ups, so a
    // speed change or an unrelated control change does not move it later.
    let start: number | undefined;
    for (;;) {
      // The change counter is read before the flags and the speed, and the
      // wait is on that value: whatever changes after the checks ends the wait.
      const seen = this.control.wakeSeq();
      if (this.control.cancel === CANCEL_HARD || this.control.pauseRequested) return false;
      const speed = this.control.speed;
      const now = this.now();
      if (speed <= 0) {
        this.next = now;
        return true;
      }
      start ??= Math.max(this.next, now);
      const slot = start + (bytes * 1000) / speed;
      if (slot <= now) {
        this.next = slot;
        return true;
      }
      await this.control.waitForChange(slot - now, seen);
    }
  }
}
