/**
 * Block-job sessions for tests that run the same QMP script against qbd and
 * the reference: images made with qemu-img/qemu-io, a transcript of replies
 * and of events (volatile parts masked), and the two daemons one after the
 * other.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { startDaemon, tempDir, waitFor, type DaemonLimits, type Flavour, type RunningDaemon } from './daemons';
import type { QmpTestClient } from './qmp-client';

export const MiB = 1024 * 1024;
/** Directories the sessions made; the test file removes them afterwards. */
export const dirs: string[] = [];

export function img(dir: string, name: string, size: number, writes: Array<[number, number, number]> = []): string {
  const file = path.join(dir, name);
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', file, String(size)]);
  if (writes.length > 0) {
    const args = writes.flatMap(([pattern, off, len]) => ['-c', `write -P ${pattern} ${off} ${len}`]);
    execFileSync('qemu-io', ['-f', 'raw', ...args, file], { stdio: 'ignore' });
  }
  return file;
}

export function compare(a: string, b: string): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', a, b]);
    return true;
  } catch {
    return false;
  }
}

/**
 * One QMP session: the replies in order and the events in order, volatile
 * parts masked. The two lists are kept apart because when an event leaves
 * relative to a reply depends on timing in both daemons.
 */
export class Transcript {
  readonly lines: string[] = [];
  readonly events: string[] = [];
  private seen = 0;

  constructor(
    private readonly c: QmpTestClient,
    private readonly mask: (text: string) => string = (t) => t,
  ) {}

  private flushEvents(): void {
    for (; this.seen < this.c.events.length; this.seen++) {
      const e = this.c.events[this.seen];
      this.events.push(this.mask(`${e.event} ${JSON.stringify(e.data ?? {})}`));
    }
  }

  async run(command: string, args?: Record<string, unknown>): Promise<any> {
    const reply = await this.c.execute(command, args);
    this.flushEvents();
    this.lines.push(this.mask(`${command} -> ${JSON.stringify(reply.error ?? reply.return)}`));
    return reply;
  }

  /** Waits for an event (without taking it from the client's list). */
  async until(name: string, count = 1): Promise<void> {
    await waitFor(() => this.c.events.filter((e: any) => e.event === name).length >= count, 20_000, name);
    // Events of the same moment arrive together: give the rest of the burst a moment.
    await new Promise((r) => setTimeout(r, 100));
    this.flushEvents();
  }
}

export const nodeNames = (t: string) => t.replace(/#block\d+/g, '#blockN').replace(/"(offset|current-progress)":\d+/g, '"$1":N');

/**
 * The events of one job, in order: the part of the sequence that does not
 * depend on timing between jobs. A drained section pauses a running job and
 * resumes it; how many drains a job sees while it starts (one per action of
 * a transaction, more when the reference's own I/O drains) depends on
 * timing, so back-to-back paused/running pairs count as one.
 */
export function jobEvents(events: string[], job: string): string[] {
  const mine = events.filter((e) => e.includes(`"id":"${job}"`) || e.includes(`"device":"${job}"`));
  const isPair = (i: number) => mine[i]?.includes('"status":"paused"') && mine[i + 1]?.includes('"status":"running"');
  return mine.filter((_, i) => !(isPair(i) && isPair(i + 2)) && !(isPair(i - 1) && isPair(i + 1)));
}

export interface Session {
  daemon: RunningDaemon;
  c: QmpTestClient;
  t: Transcript;
  dir: string;
}

export async function session(flavour: Flavour, images: (dir: string) => Record<string, string>, mask = nodeNames, limits: DaemonLimits = {}): Promise<Session> {
  const dir = tempDir(`qbd-jobs-${flavour}-`);
  dirs.push(dir);
  const files = images(dir);
  const daemon = await startDaemon(flavour, [], { dir, ...limits });
  const c = await daemon.client();
  const t = new Transcript(c, (s) => mask(s.split(dir).join('DIR')));
  for (const [node, file] of Object.entries(files)) {
    await c.cmd('blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: file } });
  }
  return { daemon, c, t, dir };
}

export async function both(
  images: (dir: string) => Record<string, string>,
  script: (s: Session) => Promise<void>,
  mask = nodeNames,
  limits: DaemonLimits = {},
): Promise<{ qbd: Session; qsd: Session }> {
  const out: Partial<Record<Flavour, Session>> = {};
  for (const flavour of ['qsd', 'qbd'] as const) {
    const s = await session(flavour, images, mask, limits);
    try {
      await script(s);
    } finally {
      s.c.close();
      await s.daemon.stop();
    }
    out[flavour] = s;
  }
  return { qbd: out.qbd!, qsd: out.qsd! };
}

