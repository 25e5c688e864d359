/**
 * qcow2, I/O half: a write-back cache of one-cluster metadata tables (L2
 * tables, refcount blocks), keyed by host offset. The cache only loads,
 * evicts and keeps one write-back per entry in flight; what must reach the
 * disk before an entry may be written (the ordering rules) is the owner's
 * `writeBack`, which snapshots the buffer once its dependencies are met.
 */

export interface CacheEntry {
  readonly offset: number;
  readonly buf: Buffer;
  dirty: boolean;
  lastUse: number;
  /** The write-back in flight, if any. */
  writing?: Promise<void>;
  /** Refcount generation the entry's content relies on being on disk (L2 tables). */
  needRefGen: number;
  /** File write sequence number that must be synced before this entry is written (data before mappings). */
  needSyncSeq: number;
}

export interface CacheOwner {
  load(offset: number, buf: Buffer): Promise<void>;
  /** Writes the entry once its dependencies are on disk; clears `dirty` when it snapshots the buffer. */
  writeBack(entry: CacheEntry): Promise<void>;
}

export class MetadataCache {
  private readonly entries = new Map<number, CacheEntry>();
  private readonly loading = new Map<number, Promise<CacheEntry>>();
  private clock = 0;

  constructor(
    private readonly capacity: number,
    private readonly clusterSize: number,
    private readonly owner: CacheOwner,
  ) {}

  peek(offset: number): CacheEntry | undefined {
    return this.entries.get(offset);
  }

  async get(offset: number): Promise<CacheEntry> {
    const hit = this.entries.get(offset);
    if (hit) {
      hit.lastUse = ++this.clock;
      return hit;
    }
    const pending = this.loading.get(offset);
    if (pending) return pending;
    const p = this.load(offset);
    this.loading.set(offset, p);
    try {
      return await p;
    } finally {
      this.loading.delete(offset);
    }
  }

  private async load(offset: number): Promise<CacheEntry> {
    await this.makeRoom();
    const buf = Buffer.allocUnsafe(this.clusterSize);
    await this.owner.load(offset, buf);
    // A table created while we loaded (cannot happen for one offset twice, but be safe) wins.
    const existing = this.entries.get(offset);
    if (existing) return existing;
    return this.insert(offset, buf);
  }

  /** Puts a table that was just written to disk (a new L2 table or refcount block) into the cache. */
  async adopt(offset: number, buf: Buffer): Promise<CacheEntry> {
    await this.makeRoom();
    return this.insert(offset, buf);
  }

  private insert(offset: number, buf: Buffer): CacheEntry {
    const e: CacheEntry = { offset, buf, dirty: false, lastUse: ++this.clock, needRefGen: 0, needSyncSeq: 0 };
    this.entries.set(offset, e);
    return e;
  }

  /** Evicts least recently used clean entries; writes a dirty one back first when all are dirty. */
  private async makeRoom(): Promise<void> {
    while (this.entries.size >= this.capacity) {
      let victim: CacheEntry | undefined;
      let dirtyVictim: CacheEntry | undefined;
      for (const e of this.entries.values()) {
        if (e.writing) continue;
        if (!e.dirty) {
          if (!victim || e.lastUse < victim.lastUse) victim = e;
        } else if (!dirtyVictim || e.lastUse < dirtyVictim.lastUse) {
          dirtyVictim = e;
        }
      }
      if (victim) {
        this.entries.delete(victim.offset);
        return;
      }
      if (dirtyVictim) {
        await this.write(dirtyVictim);
        continue;
      }
      // Every entry is being written: wait for one.
      const busy = [...this.entries.values()].find((e) => e.writing);
      if (!busy) return;
      await busy.writing;
    }
  }

  /** Writes one entry back (waiting for a write already in flight). */
  async write(e: CacheEntry): Promise<void> {
    while (e.writing) await e.writing;
    if (!e.dirty) return;
    const p = this.owner.writeBack(e);
    e.writing = p;
    try {
      await p;
    } finally {
      e.writing = undefined;
    }
  }

  /** Writes back every dirty entry, and waits for write-backs already in flight. */
  async flush(): Promise<void> {
    const all = [...this.entries.values()];
    await Promise.all(all.map((e) => (e.dirty || e.writing ? this.write(e) : undefined)));
    // Entries dirtied while we waited are written too.
    for (const e of this.entries.values()) if (e.dirty || e.writing) await this.write(e);
  }

  get hasDirty(): boolean {
    for (const e of this.entries.values()) if (e.dirty || e.writing) return true;
    return false;
  }

  /** Forgets a table whose cluster was freed (after its last write-back). */
  drop(offset: number): void {
    this.entries.delete(offset);
  }
}
