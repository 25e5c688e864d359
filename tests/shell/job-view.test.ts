import { describe, it, expect } from 'vitest';
import { JobBoard, JobInfo, formatSize, jobsSettled, progressBar, renderJobs } from '../../src/shell/job-view';

function job(id: string, status: string, current: number, total: number, type = 'backup'): JobInfo {
  return { id, type, status, 'current-progress': current, 'total-progress': total };
}

describe('job view', () => {
  it('draws a progress bar in proportion', () => {
    expect(progressBar(0, 100, 10)).toBe('[..........]');
    expect(progressBar(50, 100, 10)).toBe('[#####.....]');
    expect(progressBar(100, 100, 10)).toBe('[##########]');
    expect(progressBar(5, 0, 4)).toBe('[....]');
  });

  it('writes sizes in binary units', () => {
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(1536)).toBe('1.5 KiB');
    expect(formatSize(64 << 20)).toBe('64.0 MiB');
  });

  it('renders one line per job with status, percentage, offset/length and speed', () => {
    const lines = renderJobs([job('backup0', 'running', 16 << 20, 64 << 20)], new Map([['backup0', 8 << 20]]), 200);
    expect(lines).toEqual([
      'backup0  backup  running    [########......................]   25.0%  16.0 MiB / 64.0 MiB  8.0 MiB/s',
    ]);
  });

  it('shows raw counts for jobs whose progress is not in bytes, and the error', () => {
    const failed = { ...job('create0', 'concluded', 0, 1, 'create'), error: 'No space left' };
    expect(renderJobs([failed], new Map(), 200)).toEqual([
      'create0  create  concluded  [..............................]    0.0%  0 / 1  error: No space left',
    ]);
  });

  it('cuts lines to the terminal width', () => {
    const [line] = renderJobs([job('backup0', 'running', 1, 2)], new Map(), 40);
    expect(line).toHaveLength(39);
  });

  it('considers jobs settled when none is in a state it leaves on its own', () => {
    expect(jobsSettled([])).toBe(true);
    expect(jobsSettled([job('a', 'ready', 1, 1), job('b', 'paused', 0, 1), job('c', 'concluded', 1, 1)])).toBe(true);
    expect(jobsSettled([job('a', 'ready', 1, 1), job('b', 'running', 0, 1)])).toBe(false);
  });
});

describe('JobBoard', () => {
  it('measures speed from the progress between polls', () => {
    const board = new JobBoard();
    board.applyPoll([job('j', 'running', 0, 100 << 20)], 1000);
    board.applyPoll([job('j', 'running', 10 << 20, 100 << 20)], 2000);
    expect(board.render(200)[0]).toMatch(/10\.0 MiB \/ 100\.0 MiB {2}10\.0 MiB\/s$/);
  });

  it('keeps a job that vanished between polls, with the final progress its event reported', () => {
    const board = new JobBoard();
    board.applyPoll([job('j', 'running', 1 << 20, 4 << 20)], 1000);
    board.applyEvent({ event: 'BLOCK_JOB_COMPLETED', data: { device: 'j', offset: 4 << 20, len: 4 << 20, type: 'backup' } });
    board.applyEvent({ event: 'JOB_STATUS_CHANGE', data: { id: 'j', status: 'concluded' } });
    board.applyEvent({ event: 'JOB_STATUS_CHANGE', data: { id: 'j', status: 'null' } });
    board.applyPoll([], 2000);
    expect(board.settled).toBe(true);
    expect(board.render(200)).toEqual([
      'j   backup  dismissed  [##############################]  100.0%  4.0 MiB / 4.0 MiB',
    ]);
  });

  it('marks a cancelled job as cancelled', () => {
    const board = new JobBoard();
    board.applyPoll([job('j', 'running', 1024, 4096)], 1000);
    board.applyEvent({ event: 'BLOCK_JOB_CANCELLED', data: { device: 'j', offset: 2048, len: 4096, type: 'backup' } });
    board.applyPoll([], 2000);
    expect(board.render(200)[0]).toMatch(/^j\s+backup\s+cancelled\s+\[#{15}\.{15}\]\s+50\.0%/);
  });
});
