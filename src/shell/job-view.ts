/**
 * What the live job view draws: one line per job with a progress bar,
 * offset/length, speed and status. Pure code over `query-jobs` replies and
 * job events; the terminal handling lives in job-watch.ts.
 *
 * Jobs that finish between two polls are usually dismissed at once
 * (auto-dismiss), so they vanish from `query-jobs`. The board keeps showing
 * them, with the final progress and error their BLOCK_JOB_* event reported.
 */

import { QmpEvent } from './qmp-client';

export interface JobInfo {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** States a job leaves on its own; the view keeps watching while any job is in one. */
const MOVING_STATES = new Set(['created', 'running', 'waiting', 'aborting']);

export function jobsSettled(jobs: readonly JobInfo[]): boolean {
  return !jobs.some((job) => MOVING_STATES.has(job.status));
}

/** Bytes per second per job, from the progress between two samples. */
export class JobSpeedMeter {
  private readonly last = new Map<string, { progress: number; at: number; speed: number }>();

  update(jobs: readonly JobInfo[], nowMs: number): Map<string, number> {
    const speeds = new Map<string, number>();
    const seen = new Set<string>();
    for (const job of jobs) {
      seen.add(job.id);
      const previous = this.last.get(job.id);
      let speed = previous?.speed ?? 0;
      if (previous && nowMs > previous.at) {
        const instant = Math.max(0, (job['current-progress'] - previous.progress) / ((nowMs - previous.at) / 1000));
        // Smooth a little: samples are taken at uneven moments.
        speed = previous.speed === 0 ? instant : 0.5 * previous.speed + 0.5 * instant;
      }
      if (!MOVING_STATES.has(job.status)) speed = 0;
      this.last.set(job.id, { progress: job['current-progress'], at: nowMs, speed });
      speeds.set(job.id, speed);
    }
    for (const id of [...this.last.keys()]) if (!seen.has(id)) this.last.delete(id);
    return speeds;
  }
}

/** The jobs seen since the view opened, current or gone. */
export class JobBoard {
  private readonly jobs = new Map<string, JobInfo>();
  private readonly meter = new JobSpeedMeter();
  private speeds = new Map<string, number>();
  private present: JobInfo[] = [];

  /** Takes a `query-jobs` reply. */
  applyPoll(jobs: readonly JobInfo[], nowMs: number): void {
    this.present = [...jobs];
    const current = new Set(jobs.map((job) => job.id));
    for (const [id, job] of this.jobs) {
      if (!current.has(id) && job.status !== 'cancelled') job.status = 'dismissed';
    }
    for (const job of jobs) this.jobs.set(job.id, { ...job });
    this.speeds = this.meter.update(jobs, nowMs);
  }

  /** Takes an event; only job events matter. */
  applyEvent(event: QmpEvent): void {
    const data = event.data ?? {};
    if (event.event === 'JOB_STATUS_CHANGE') {
      const job = this.jobs.get(String(data.id));
      if (job && typeof data.status === 'string') job.status = data.status === 'null' ? 'dismissed' : data.status;
      return;
    }
    if (event.event === 'BLOCK_JOB_COMPLETED' || event.event === 'BLOCK_JOB_CANCELLED') {
      const job = this.jobs.get(String(data.device));
      if (!job) return;
      if (typeof data.offset === 'number') job['current-progress'] = data.offset;
      if (typeof data.len === 'number') job['total-progress'] = data.len;
      if (typeof data.error === 'string') job.error = data.error;
      if (event.event === 'BLOCK_JOB_CANCELLED') job.status = 'cancelled';
    }
  }

  /** No job the server still lists is moving. */
  get settled(): boolean {
    return jobsSettled(this.present);
  }

  render(columns: number): string[] {
    return renderJobs([...this.jobs.values()], this.speeds, columns);
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

export function formatSize(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

export function progressBar(current: number, total: number, width: number): string {
  const fraction = total > 0 ? Math.min(1, Math.max(0, current / total)) : 0;
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/** The view's lines (without trailing newlines), each cut to fit `columns`. */
export function renderJobs(jobs: readonly JobInfo[], speeds: ReadonlyMap<string, number>, columns: number): string[] {
  if (jobs.length === 0) return ['No jobs.'];
  const idWidth = Math.max(2, ...jobs.map((job) => job.id.length));
  const typeWidth = Math.max(4, ...jobs.map((job) => job.type.length));
  const statusWidth = Math.max(9, ...jobs.map((job) => job.status.length));
  const lines: string[] = [];
  for (const job of jobs) {
    const current = job['current-progress'];
    const total = job['total-progress'];
    const percent = total > 0 ? `${((100 * current) / total).toFixed(1)}%` : '-';
    const amounts = total >= 1024 ? `${formatSize(current)} / ${formatSize(total)}` : `${current} / ${total}`;
    const speed = speeds.get(job.id) ?? 0;
    const rate = speed > 0 ? `${formatSize(Math.round(speed))}/s` : '';
    const parts = [
      job.id.padEnd(idWidth),
      job.type.padEnd(typeWidth),
      job.status.padEnd(statusWidth),
      progressBar(current, total, 30),
      percent.padStart(6),
      amounts,
      rate,
    ];
    let line = parts.join('  ').trimEnd();
    if (job.error) line += `  error: ${job.error}`;
    lines.push(clip(line, columns));
  }
  return lines;
}

function clip(line: string, columns: number): string {
  return line.length < columns ? line : line.slice(0, Math.max(1, columns - 1));
}
