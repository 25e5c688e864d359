/**
 * Serialises read-modify-write cycles against overlapping writes on one
 * node: an unaligned write reads, patches and rewrites whole aligned blocks,
 * so a concurrent write into the same blocks must wait for it.
 */
interface Held {
  start: number;
  end: number;
  done: Promise<void>;
}

export class RangeLocks {
  private readonly held = new Set<Held>();

  /** Waits until no held range overlaps [offset, offset + bytes). */
  async waitFor(offset: number, bytes: number): Promise<void> {
    for (;;) {
      const blocker = this.overlapping(offset, offset + bytes);
      if (!blocker) return;
      await blocker.done;
    }
  }

  /** Takes [offset, offset + bytes) once free; returns the release function. */
  async acquire(offset: number, bytes: number): Promise<() => void> {
    // Check and take in the same turn: another waiter woken by the same release must not slip in between.
    for (let blocker = this.overlapping(offset, offset + bytes); blocker; blocker = this.overlapping(offset, offset + bytes)) {
      await blocker.done;
    }
    let release!: () => void;
    const entry: Held = { start: offset, end: offset + bytes, done: new Promise<void>((r) => (release = r)) };
    this.held.add(entry);
    return () => {
      this.held.delete(entry);
      release();
    };
  }

  private overlapping(start: number, end: number): Held | undefined {
    for (const h of this.held) if (h.start < end && start < h.end) return h;
    return undefined;
  }
}
