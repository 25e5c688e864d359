/**
 * One QMP session of fixed steps against a fresh daemon of either flavour,
 * in a temporary directory of its own: what compat tests run once against
 * qbd and once against qemu-storage-daemon, then compare.
 */
import * as fs from 'node:fs';
import { normalise } from './compare';
import { startDaemon, tempDir, type Flavour, type RunningDaemon } from './daemons';

export interface QmpSessionOptions {
  /** Prefix of the temporary directory; the flavour is appended. */
  prefix: string;
  /** Command-line arguments of the daemon. */
  args?: string[];
  /** Fills the directory before the daemon starts. */
  prepare?: (dir: string) => void;
  /** Placeholders replaced in each step after `$DIR` (the directory). */
  vars?: Record<string, string>;
  /** What a reply or event becomes before it is compared; by default, normalised against the directory. */
  comparable?: (message: unknown, dir: string) => unknown;
  /** How long to wait for each reply. */
  replyTimeoutMs?: number;
  /** Runs once the steps are done, while the daemon still runs. */
  beforeStop?: (dir: string) => void;
}

export interface QmpSessionResult {
  /** One per step, made comparable. */
  replies: unknown[];
  /** Every event of the session, timestamps dropped, made comparable. */
  events: unknown[];
}

export async function qmpSession(flavour: Flavour, steps: readonly string[], options: QmpSessionOptions): Promise<QmpSessionResult> {
  const dir = tempDir(`${options.prefix}${flavour}-`);
  const comparable = options.comparable ?? ((message: unknown, d: string) => normalise(message, d));
  options.prepare?.(dir);
  let daemon: RunningDaemon | undefined;
  try {
    daemon = await startDaemon(flavour, options.args ?? [], { dir });
    const c = await daemon.client();
    const replies: unknown[] = [];
    for (const step of steps) {
      let text = step.split('$DIR').join(dir);
      for (const [k, v] of Object.entries(options.vars ?? {})) text = text.split(k).join(v);
      c.sendRaw(text);
      replies.push(comparable(await c.next(options.replyTimeoutMs), dir));
    }
    const events = c.events.map((e: { event: string; data?: unknown }) => comparable({ event: e.event, data: e.data }, dir));
    c.close();
    options.beforeStop?.(dir);
    return { replies, events };
  } finally {
    await daemon?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
