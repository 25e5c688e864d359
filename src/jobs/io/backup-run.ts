/**
 * The run half of a backup job: the target receives the source as it was
 * when the job was prepared. A write notifier on the source copies the old
 * data of every cluster a write touches before the write goes on (copy
 * before write); the loop copies the remaining clusters in order. Each
 * cluster is copied once, by whichever side claims it first; the other
 * waits for that copy.
 */
import type { Channel } from '../../common/channel';
import { STATUS } from '../../block/common/io-types';
import { SharedDirtyBitmap } from '../../block/common/shared-dirty-bitmap';
import { DirtyBitmap } from '../../block/io/dirty-bitmap';
import type { IoNode } from '../../block/io/io-node';
import { blockStatusNode, flushNode } from '../../block/io/request';
import { addWriteNotifier } from '../../block/io/write-notifiers';
import type { BackupRunParams, JobControl } from '../common/job-control';
import { BufferPool, copyRange, MAX_COPY_REQUEST } from './copy-range';
import { RunBase } from './run-base';

const MAX_IN_FLIGHT = 8;

export class BackupRun extends RunBase {
  /** Clusters not yet copied (nor being copied). */
  private readonly toCopy: DirtyBitmap;
  /** Copies in progress, by cluster. */
  private readonly copying = new Map<number, Promise<void>>();
  private readonly loopOps = new Set<Promise<void>>();
  private readonly removeNotifier: () => void;
  private readonly pool: BufferPool;
  private copied = 0;
  private total = 0;
  private failure: unknown;

  constructor(
    id: string,
    control: JobControl,
    channel: Channel,
    private readonly source: IoNode,
    private readonly target: IoNode,
    private readonly params: BackupRunParams,
  ) {
    super(id, control, channel, params.onSourceError, params.onTargetError);
    this.toCopy = new DirtyBitmap(source.length, params.clusterSize);
    if (params.syncBitmap) {
      this.total = this.copyOnlyDirty(SharedDirtyBitmap.from(params.syncBitmap));
    } else {
      // Until the loop has looked at allocation, every cluster counts as old data to keep.
      this.toCopy.setAll();
      this.total = source.length;
    }
    this.pool = new BufferPool(Math.max(MAX_COPY_REQUEST, params.clusterSize));
    this.removeNotifier = addWriteNotifier(source, { before: (offset, bytes) => this.beforeWrite(offset, bytes) });
    this.updateProgress();
  }

  /** sync=bitmap: only the clusters holding a dirty chunk of the bitmap are old data to copy; returns their bytes. */
  private copyOnlyDirty(bitmap: SharedDirtyBitmap): number {
    for (let c = bitmap.nextDirty(0); c >= 0; ) {
      const end = bitmap.nextClean(c);
      this.toCopy.set(c * bitmap.granularity, Math.min((end - c) * bitmap.granularity, this.source.length - c * bitmap.granularity));
      c = end < bitmap.chunks ? bitmap.nextDirty(end) : -1;
    }
    return this.toCopy.count;
  }

  /** Hands the clusters not copied (nor being copied) to the control half, for bitmap-mode=always. */
  private reportRemaining(): void {
    if (!this.params.remaining) return;
    const out = SharedDirtyBitmap.from(this.params.remaining);
    const c = this.params.clusterSize;
    for (let i = this.toCopy.nextDirty(0); i >= 0; i = this.toCopy.nextDirty(i + 1)) out.mark(i * c, c);
    for (const i of this.copying.keys()) out.mark(i * c, c);
  }

  private updateProgress(): void {
    this.control.setProgress(this.copied, this.total);
  }

  /** Copy before write: the clusters `[offset, offset + bytes)` touches reach the target first. */
  private beforeWrite(offset: number, bytes: number): Promise<void> | undefined {
    const c = this.params.clusterSize;
    const first = Math.floor(offset / c);
    const end = Math.min(this.toCopy.chunks, Math.ceil((offset + bytes) / c));
    let waits: Promise<void>[] | undefined;
    for (let i = first; i < end; ) {
      const pending = this.copying.get(i);
      if (pending) {
        (waits ??= []).push(pending);
        i++;
      } else if (this.toCopy.get(i)) {
        const runEnd = this.toCopy.runEnd(i, end - i);
        (waits ??= []).push(this.claim(i, runEnd));
        i = runEnd;
      } else {
        i++;
      }
    }
    return waits ? Promise.all(waits).then(() => undefined) : undefined;
  }

  /** Claims clusters [first, end) and copies them; a failure makes them claimable again. */
  private claim(first: number, end: number): Promise<void> {
    const c = this.params.clusterSize;
    this.toCopy.clearChunks(first, end);
    const offset = first * c;
    const bytes = Math.min(end * c, this.source.length) - offset;
    const done = (async () => {
      const buf = bytes <= this.pool.size ? this.pool.take() : Buffer.allocUnsafeSlow(bytes);
      try {
        await copyRange(this.source, this.target, offset, bytes, buf, { unmap: true, compress: this.params.compress });
        this.copied += bytes;
        this.updateProgress();
      } catch (err) {
        this.toCopy.set(offset, bytes);
        throw err;
      } finally {
        this.pool.give(buf);
        for (let i = first; i < end; i++) this.copying.delete(i);
      }
    })();
    for (let i = first; i < end; i++) this.copying.set(i, done);
    return done;
  }

  /** sync=top: clusters the top layer does not hold are not old data of the source. */
  private async skipUnallocated(): Promise<void> {
    for (let at = 0; at < this.source.length; ) {
      const st = await blockStatusNode(this.source, at, this.source.length - at);
      const c = this.params.clusterSize;
      if (!(st.status & STATUS.ALLOCATED)) {
        // Only whole clusters are skipped.
        const first = Math.ceil(at / c);
        const end = Math.floor((at + st.bytes) / c);
        if (end > first) {
          this.toCopy.clearChunks(first, end);
          this.total -= (end - first) * c;
        }
      }
      at += st.bytes;
    }
    this.updateProgress();
  }

  async run(): Promise<{ ended: 'done' | 'cancelled' }> {
    if (this.params.sync === 'top') await this.skipUnallocated();
    try {
      if (this.params.sync === 'none') {
        // Only copy-before-write works: the job lasts until it is cancelled.
        while (!this.hardCancelled) await this.controlChanged(this.control.wakeSeq());
        return { ended: 'cancelled' };
      }
      const c = this.params.clusterSize;
      let cursor = 0;
      for (;;) {
        const seen = this.control.wakeSeq();
        if (this.failure !== undefined) throw RunBase.failure(this.failure);
        if (this.hardCancelled) return { ended: 'cancelled' };
        if (this.control.pauseRequested) {
          await Promise.all(this.loopOps);
          await this.pausePoint();
          continue;
        }
        const first = this.toCopy.nextDirty(cursor);
        if (first < 0) {
          if (this.loopOps.size > 0) {
            await Promise.race([...this.loopOps, this.controlChanged(seen)]);
            continue;
          }
          // Clusters failed by copy-before-write became claimable again behind the cursor.
          if (this.toCopy.count > 0) {
            cursor = 0;
            continue;
          }
          if (this.copying.size > 0) {
            await Promise.allSettled([...new Set(this.copying.values())]);
            continue;
          }
          break;
        }
        if (this.loopOps.size >= MAX_IN_FLIGHT) {
          await Promise.race([...this.loopOps, this.controlChanged(seen)]);
          continue;
        }
        const cap = this.limiter.requestCap(c) || MAX_COPY_REQUEST;
        const end = this.toCopy.runEnd(first, Math.max(1, Math.floor(Math.min(cap, MAX_COPY_REQUEST) / c)));
        const bytes = Math.min(end * c, this.source.length) - first * c;
        if (!(await this.limiter.take(bytes))) continue;
        if (!this.toCopy.get(first)) continue;
        const realEnd = this.toCopy.runEnd(first, end - first);
        cursor = realEnd;
        this.control.setBusy(true);
        const op: Promise<void> = this.claim(first, realEnd)
          .catch(async (err: unknown) => {
            // Once the job fails, the copies that fail after it add no event.
            if (this.failure !== undefined) return;
            if ((await this.onCopyError(err)) === 'fail') this.failure ??= err;
            else cursor = Math.min(cursor, first);
          })
          .finally(() => {
            this.loopOps.delete(op);
            if (this.loopOps.size === 0) this.control.setBusy(false);
          });
        this.loopOps.add(op);
      }
      await flushNode(this.target);
      return { ended: 'done' };
    } finally {
      await Promise.allSettled([...this.loopOps]);
      this.reportRemaining();
      this.control.setBusy(false);
    }
  }

  async finalCopy(): Promise<void> {
    await flushNode(this.target);
  }

  release(): void {
    this.removeNotifier();
  }
}
