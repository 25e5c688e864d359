/**
 * The copy loops' rate limiter: pause, cancel and speed changes that land
 * while a request waits for its slot (or just before it starts waiting),
 * the limit over any interval of a second or more, and no credit built up
 * while idle.
 *
 * Two kinds of control block: the real one (its sleeps are real
 * Atomics.waitAsync waits, long enough that a missed wake-up would hang
 * the test) and one on a simulated clock, for the arithmetic of the limit.
 */
import { describe, expect, it } from 'vitest';
import { CANCEL_HARD, CANCEL_SOFT, JobControl } from '../../src/jobs/common/job-control';
import { RateLimiter } from '../../src/jobs/io/rate-limit';

/** Lets every ready callback run (timers of 0 ms and I/O callbacks included). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Whether `p` has resolved (after letting what is ready run), and with what. */
async function state<T>(p: Promise<T>): Promise<{ done: false } | { done: true; value: T }> {
  let out: { done: false } | { done: true; value: T } = { done: false };
  void p.then((value) => (out = { done: true, value }));
  await settle();
  return out;
}

/**
 * A control block on a simulated clock: sleeps end when the test moves the
 * clock past them, or at once on a control change after the value the
 * sleeper read, as the real block's do.
 */
class SimulatedControl extends JobControl {
  time = 0;
  private sleepers: Array<{ until: number; seen: number; wake: () => void }> = [];
  /** Runs once, the next time the limiter reads the speed (a change landing mid-check). */
  onSpeedRead: (() => void) | undefined;

  override get speed(): number {
    const hook = this.onSpeedRead;
    this.onSpeedRead = undefined;
    hook?.();
    return super.speed;
  }

  override waitForChange(ms = Infinity, seen = this.wakeSeq()): Promise<void> {
    if (this.wakeSeq() !== seen) return Promise.resolve();
    return new Promise((wake) => this.sleepers.push({ until: this.time + ms, seen, wake }));
  }

  /** The earliest time a sleeper waits for. */
  get nextWake(): number | undefined {
    return this.sleepers.length === 0 ? undefined : Math.min(...this.sleepers.map((s) => s.until));
  }

  advanceTo(time: number): void {
    this.time = Math.max(this.time, time);
    this.release();
  }

  private release(): void {
    const seq = this.wakeSeq();
    const due = this.sleepers.filter((s) => s.until <= this.time || s.seen !== seq);
    this.sleepers = this.sleepers.filter((s) => !due.includes(s));
    for (const s of due) s.wake();
  }

  override setPaused(paused: boolean): void {
    super.setPaused(paused);
    this.release();
  }

  override requestCancel(kind: typeof CANCEL_SOFT | typeof CANCEL_HARD): void {
    super.requestCancel(kind);
    this.release();
  }

  override requestComplete(): void {
    super.requestComplete();
    this.release();
  }

  override setSpeed(bytesPerSecond: number): void {
    super.setSpeed(bytesPerSecond);
    this.release();
  }
}

function simulated(speed: number): { control: SimulatedControl; limiter: RateLimiter } {
  const control = new SimulatedControl();
  control.setSpeed(speed);
  return { control, limiter: new RateLimiter(control, () => control.time) };
}

/** Moves the simulated clock from sleep to sleep until `p` resolves. */
async function runClock<T>(control: SimulatedControl, p: Promise<T>): Promise<T> {
  for (;;) {
    const s = await state(p);
    if (s.done) return s.value;
    const next = control.nextWake;
    if (next === undefined) throw new Error('the limiter waits for nothing that will come');
    control.advanceTo(next);
  }
}

describe('rate limiter, real control block', () => {
  // At 1 byte/s a megabyte's slot is 12 days away: only a wake-up ends these waits.
  const farAway = 1024 * 1024;

  it('a pause requested while a request waits ends the wait', async () => {
    const control = new JobControl();
    control.setSpeed(1);
    const taken = new RateLimiter(control).take(farAway);
    await settle();
    control.setPaused(true);
    expect(await taken).toBe(false);
  });

  it('a pause requested before the request reaches the limiter ends it at once', async () => {
    const control = new JobControl();
    control.setSpeed(1);
    control.setPaused(true);
    expect(await new RateLimiter(control).take(farAway)).toBe(false);
  });

  it('a hard cancel while a request waits ends the wait, also one requested before', async () => {
    const control = new JobControl();
    control.setSpeed(1);
    const limiter = new RateLimiter(control);
    const taken = limiter.take(farAway);
    await settle();
    control.requestCancel(CANCEL_HARD);
    expect(await taken).toBe(false);
    expect(await limiter.take(farAway)).toBe(false);
  });

  it('a new speed while a request waits recomputes its slot', async () => {
    const control = new JobControl();
    control.setSpeed(1);
    const taken = new RateLimiter(control).take(farAway);
    await settle();
    control.setSpeed(0);
    expect(await taken).toBe(true);
  });
});

describe('rate limiter, simulated clock', () => {
  it('a pause that lands between the checks and the sleep still ends the sleep', async () => {
    const { control, limiter } = simulated(1000);
    control.onSpeedRead = () => control.setPaused(true);
    expect(await state(limiter.take(1000))).toEqual({ done: true, value: false });
  });

  it('a speed change that lands between the checks and the sleep is seen', async () => {
    const { control, limiter } = simulated(1);
    control.onSpeedRead = () => control.setSpeed(0);
    expect(await state(limiter.take(1000))).toEqual({ done: true, value: true });
  });

  it('a paused request does not take its slot; after resume it waits its full time', async () => {
    const { control, limiter } = simulated(1000);
    const taken = limiter.take(1000);
    control.advanceTo(500);
    control.setPaused(true);
    expect(await taken).toBe(false);
    control.setPaused(false);
    control.advanceTo(2000);
    const again = limiter.take(1000);
    expect(await runClock(control, again)).toBe(true);
    expect(control.time).toBe(3000);
  });

  it('a soft cancel or job-complete while waiting neither ends the wait nor moves the slot', async () => {
    const { control, limiter } = simulated(1000);
    const taken = limiter.take(1000);
    control.advanceTo(400);
    control.requestComplete();
    control.advanceTo(700);
    control.requestCancel(CANCEL_SOFT);
    expect(await state(taken)).toEqual({ done: false });
    expect(await runClock(control, taken)).toBe(true);
    expect(control.time).toBe(1000);
  });

  it('a higher speed while waiting brings the slot nearer, counted from the same start', async () => {
    const { control, limiter } = simulated(1000);
    const taken = limiter.take(4000); // slot at 4000 ms
    control.advanceTo(1000);
    control.setSpeed(4000); // 4000 bytes take 1000 ms from the start at 0: due now
    expect(await state(taken)).toEqual({ done: true, value: true });
    expect(control.time).toBe(1000);
  });

  it('a lower speed while waiting moves the slot later', async () => {
    const { control, limiter } = simulated(4000);
    const taken = limiter.take(4000); // slot at 1000 ms
    control.advanceTo(500);
    control.setSpeed(1000); // now 4000 ms from the start at 0
    expect(await runClock(control, taken)).toBe(true);
    expect(control.time).toBe(4000);
  });

  it('speed 0 (no limit) while waiting lets the request go at once', async () => {
    const { control, limiter } = simulated(1);
    const taken = limiter.take(1 << 20);
    control.advanceTo(10);
    control.setSpeed(0);
    expect(await state(taken)).toEqual({ done: true, value: true });
  });

  /** Starts requests of the limiter's cap back to back for `ms` of simulated time; their start times and sizes. */
  async function busyLoop(control: SimulatedControl, limiter: RateLimiter, until: number, granularity: number): Promise<Array<[number, number]>> {
    const starts: Array<[number, number]> = [];
    while (control.time < until) {
      const bytes = limiter.requestCap(granularity);
      expect(await runClock(control, limiter.take(bytes))).toBe(true);
      starts.push([control.time, bytes]);
    }
    return starts;
  }

  /** The most bytes started in any window of `ms` beginning at one of the starts. */
  function mostInWindow(starts: Array<[number, number]>, ms: number): number {
    let most = 0;
    for (const [t0] of starts) {
      const sum = starts.filter(([t]) => t >= t0 && t < t0 + ms).reduce((a, [, b]) => a + b, 0);
      most = Math.max(most, sum);
    }
    return most;
  }

  it('holds the limit within 5% over any interval of a second or more', async () => {
    for (const [speed, granularity] of [
      [1024 * 1024, 64 * 1024],
      [10 * 1024 * 1024, 64 * 1024],
      [300 * 1024, 4096],
      [1_000_000, 512],
    ] as const) {
      const { control, limiter } = simulated(speed);
      const starts = await busyLoop(control, limiter, 10_000, granularity);
      for (const ms of [1000, 1500, 2500, 5000]) {
        expect(mostInWindow(starts, ms)).toBeLessThanOrEqual((speed * ms * 1.05) / 1000);
      }
      // And it is a limit, not a stall: the loop gets close to the speed.
      const total = starts.reduce((a, [, b]) => a + b, 0);
      expect(total).toBeGreaterThanOrEqual(speed * 9.5);
    }
  });

  it('builds up no credit while idle', async () => {
    const speed = 1024 * 1024;
    const { control, limiter } = simulated(speed);
    await busyLoop(control, limiter, 1000, 65536);
    // Idle for a minute, then busy again: the first second gets no more than its share.
    control.advanceTo(control.time + 60_000);
    const from = control.time;
    const starts = await busyLoop(control, limiter, from + 3000, 65536);
    const firstSecond = starts.filter(([t]) => t < from + 1000).reduce((a, [, b]) => a + b, 0);
    expect(firstSecond).toBeLessThanOrEqual(speed * 1.05);
    expect(mostInWindow(starts, 1000)).toBeLessThanOrEqual(speed * 1.05);
  });
});
