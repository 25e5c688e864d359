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

  constructor(private readonly control: JobControl) {}

  /** Largest request size that keeps the limit tight at the current speed (0: no limit). */
  requestCap(granularity: number): number {
    const speed = this.control.speed;
    if (speed <= 0) return 0;
    return Math.max(granularity, Math.floor(speed / 20 / granularity) * granularity);
  }

  /** Waits for the slot of a request of `bytes`; returns false when interrupted by a pause or cancel. */
  async take(bytes: number): Promise<boolean> {
    for (;;) {
      const speed = this.control.speed;
      const now = performance.now();
      if (speed <= 0) {
        this.next = now;
        return true;
      }
      const slot = Math.max(this.next, now) + (bytes * 1000) / speed;
      if (slot <= now) {
        this.next = slot;
        return true;
      }
      await this.control.waitForChange(slot - now);
      if (this.control.cancel === CANCEL_HARD || this.control.pauseRequested) return false;
      if (performance.now() >= slot && this.control.speed === speed) {
        this.next = slot;
        return true;
      }
      // Woken by a speed change: compute the slot again from the old start.
    }
  }
}
