/**
 * Node names and job ids for completion, asked from the server when needed.
 *
 * The lists are fetched lazily (on the first Tab that needs them) and reused
 * for a short while; any executed command or event marks them stale, since it
 * may have added or removed a node or a job.
 */

import { Execute, QmpReply, isErrorReply } from './qmp-client';

const FRESH_FOR_MS = 2000;
const ANSWER_WITHIN_MS = 1500;

interface CachedList {
  names: string[];
  fetchedAt: number;
  refreshing: Promise<string[]> | undefined;
}

export class LiveNames {
  private readonly lists = new Map<string, CachedList>();

  constructor(private readonly execute: Execute, private readonly now: () => number = Date.now) {}

  /** Forgets the freshness of every list (they are refetched on next use). */
  invalidate(): void {
    for (const list of this.lists.values()) list.fetchedAt = -Infinity;
  }

  nodeNames(): Promise<string[]> {
    return this.get('nodes', async () => {
      let reply = await this.execute('query-named-block-nodes', { flat: true });
      if (isErrorReply(reply)) reply = await this.execute('query-named-block-nodes');
      return namesFrom(reply, 'node-name');
    });
  }

  jobIds(): Promise<string[]> {
    return this.get('jobs', async () => namesFrom(await this.execute('query-jobs'), 'id'));
  }

  private async get(key: string, fetch: () => Promise<string[]>): Promise<string[]> {
    let list = this.lists.get(key);
    if (!list) {
      list = { names: [], fetchedAt: -Infinity, refreshing: undefined };
      this.lists.set(key, list);
    }
    if (this.now() - list.fetchedAt < FRESH_FOR_MS) return list.names;
    const entry = list;
    entry.refreshing ??= fetch()
      .then((names) => {
        entry.names = names;
        entry.fetchedAt = this.now();
        return names;
      })
      .catch(() => entry.names)
      .finally(() => {
        entry.refreshing = undefined;
      });
    // A slow server must not freeze the Tab key: fall back to the last list.
    let timer: NodeJS.Timeout | undefined;
    const stale = new Promise<string[]>((resolve) => {
      timer = setTimeout(() => resolve(entry.names), ANSWER_WITHIN_MS);
    });
    try {
      return await Promise.race([entry.refreshing, stale]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function namesFrom(reply: QmpReply, field: string): string[] {
  if (isErrorReply(reply) || !Array.isArray(reply.return)) return [];
  const names = new Set<string>();
  for (const item of reply.return as Array<Record<string, unknown>>) {
    const name = item[field];
    if (typeof name === 'string' && name !== '') names.add(name);
  }
  return [...names].sort();
}
