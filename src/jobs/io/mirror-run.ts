/**
 * The run half of a mirror job, in the I/O context of its nodes. Writes to
 * the source are tracked in a dirty bitmap from the moment the job is
 * prepared; the loop copies dirty chunks (holes skipped) until none is
 * left, reports readiness, and then keeps copying new writes until it is
 * completed or cancelled. The last dirty chunks are copied by `finalCopy`
 * inside the control half's drained section, so the target is exact.
 *
 * copy-mode=write-blocking: a write to the source also lands on the target
 * before it completes, so the job converges under any write load.
 */
import type { Channel } from '../../common/channel';
import { STATUS, type BlockStatus } from '../../block/common/io-types';
import { DirtyBitmap } from '../../block/io/dirty-bitmap';
import type { IoNode } from '../../block/io/io-node';
import { blockStatusNode, writeNode, writeZeroesNode } from '../../block/io/request';
import { addWriteNotifier } from '../../block/io/write-notifiers';
import { CANCEL_SOFT, jobNotice, type JobControl, type MirrorRunParams } from '../common/job-control';
import { BufferPool, copyRange, CopyError, MAX_COPY_REQUEST } from './copy-range';
import { RunBase } from './run-base';
import { WriteBehind } from './write-behind';

const MAX_IN_FLIGHT = 16;

interface Op {
  first: number;
  end: number;
  bytes: number;
  done: Promise<void>;
}

export class MirrorRun extends RunBase {
  private readonly bitmap: DirtyBitmap;
  private readonly removeNotifier: () => void;
  private readonly ops = new Set<Op>();
  private readonly pool: BufferPool;
  private readonly writeBehind: WriteBehind;
  private bytesInFlight = 0;
  private copied = 0;
  private cursor = 0;
  private readySent = false;
  private failure: unknown;
  /** The initial scan while it runs: the loop copies what it marked so far, and READY waits for its end. */
  private scanning: Promise<void> | undefined;
  private scanFailure: { err: unknown } | undefined;
  private scanStop = false;

  constructor(
    id: string,
    control: JobControl,
    channel: Channel,
    private readonly source: IoNode,
    private readonly target: IoNode,
    private readonly params: MirrorRunParams,
  ) {
    super(id, control, channel, params.onSourceError, params.onTargetError);
    this.bitmap = new DirtyBitmap(source.length, params.granularity);
    this.pool = new BufferPool(Math.max(MAX_COPY_REQUEST, params.granularity));
    this.writeBehind = new WriteBehind(target);
    this.removeNotifier = addWriteNotifier(source, {
      after: (offset, bytes, kind, data, ok) => this.sourceWritten(offset, bytes, kind, data, ok),
    });
  }

  private sourceWritten(offset: number, bytes: number, kind: 'write' | 'zero' | 'discard', data: Buffer | undefined, ok: boolean): Promise<void> | undefined {
    if (this.params.copyMode !== 'write-blocking' || !ok || kind === 'discard' || this.target.length !== this.source.length) {
      this.bitmap.set(offset, bytes);
      this.updateProgress();
      return undefined;
    }
    return this.writeThrough(offset, bytes, kind, data);
  }

  /** Active mirroring: the same write on the target before the source write completes. */
  private async writeThrough(offset: number, bytes: number, kind: 'write' | 'zero', data: Buffer | undefined): Promise<void> {
    try {
      if (kind === 'write') await writeNode(this.target, offset, data!);
      else await writeZeroesNode(this.target, offset, bytes, { mayUnmap: this.params.unmap });
    } catch {
      // The background loop copies it again, and reports the error there.
      this.bitmap.set(offset, bytes);
      return;
    }
    // A background copy of the same chunks may have read the old data: copy them again.
    const g = this.params.granularity;
    const first = Math.floor(offset / g);
    const end = Math.ceil((offset + bytes) / g);
    for (const op of this.ops) if (op.first < end && first < op.end) this.bitmap.set(offset, bytes);
    this.updateProgress();
  }

  private updateProgress(): void {
    this.control.setProgress(this.copied, this.copied + this.bytesInFlight + this.bitmap.count);
  }

  /**
   * Marks what the job copies first: for an active commit what lies above
   * the base; for sync=full everything (into a new image, what the chain
   * holds); for top what the top layer holds; for none nothing.
   */
  private async initialDirty(): Promise<void> {
    const { sync, baseDepth, allocatedOnly } = this.params;
    let copies: ((st: BlockStatus) => boolean) | undefined;
    if (baseDepth !== undefined) copies = (st) => st.depth !== undefined && st.depth >= 1 && st.depth < baseDepth;
    // Allocated in the node or anywhere below it in the chain.
    else if (sync === 'full' && allocatedOnly) copies = (st) => (st.status & STATUS.ALLOCATED) !== 0 || (st.depth ?? 0) > 0;
    else if (sync === 'full') this.bitmap.setAll();
    else if (sync === 'top') copies = (st) => (st.status & STATUS.ALLOCATED) !== 0;
    if (copies) {
      for (let at = 0; at < this.source.length && !this.scanStop; ) {
        const st = await blockStatusNode(this.source, at, this.source.length - at);
        if (copies(st)) this.bitmap.set(at, st.bytes);
        at += st.bytes;
      }
    }
    this.updateProgress();
  }

  async run(): Promise<{ ended: 'done' | 'cancelled' }> {
    if (this.source.length !== this.target.length) throw new Error('Source and target image have different sizes');
    // The scan of what to copy runs beside the copies: on a long chain it costs a block status call per extent.
    this.scanning = this.initialDirty().then(
      () => {
        this.scanning = undefined;
      },
      (err: unknown) => {
        this.scanFailure = { err };
        this.scanning = undefined;
      },
    );
    try {
      for (;;) {
        const seen = this.control.wakeSeq();
        if (this.scanFailure) throw this.scanFailure.err;
        if (this.failure !== undefined) throw RunBase.failure(this.failure);
        if (this.hardCancelled) return { ended: 'cancelled' };
        if (this.control.pauseRequested) {
          await this.waitOps();
          await this.pausePoint();
          continue;
        }
        if (this.bitmap.count === 0 && this.ops.size === 0 && this.scanning) {
          await Promise.race([this.bitmap.whenDirtied(), this.scanning, this.controlChanged(seen)]);
          continue;
        }
        if (this.bitmap.count === 0 && this.ops.size === 0) {
          if (!this.readySent) {
            // As QEMU's mirror: the target is flushed before READY, so all that was copied is on disk by then.
            try {
              await this.writeBehind.flush();
            } catch (err) {
              if ((await this.onCopyError(new CopyError('target', err))) === 'fail') this.failure ??= err;
              continue;
            }
            this.readySent = true;
            this.channel.notify(jobNotice, { id: this.id, what: 'ready' });
          }
          this.control.setBusy(false);
          if (this.control.completeRequested || this.control.cancel === CANCEL_SOFT) return { ended: 'done' };
          await Promise.race([this.bitmap.whenDirtied(), this.controlChanged(seen)]);
          continue;
        }
        if (this.bitmap.count === 0 || this.ops.size >= MAX_IN_FLIGHT || this.bytesInFlight >= this.params.bufSize) {
          await Promise.race([...[...this.ops].map((o) => o.done), this.controlChanged(seen)]);
          continue;
        }
        await this.issueNext();
      }
    } finally {
      this.scanStop = true;
      await this.scanning;
      await this.waitOps();
      await this.writeBehind.settle();
      this.control.setBusy(false);
    }
  }

  private async waitOps(): Promise<void> {
    while (this.ops.size > 0) await Promise.all([...this.ops].map((o) => o.done));
  }

  /** Starts the copy of the next dirty run after the cursor. */
  private async issueNext(): Promise<void> {
    const g = this.params.granularity;
    let first = this.bitmap.nextDirty(this.cursor);
    if (first < 0) first = this.bitmap.nextDirty(0);
    if (first < 0) return;
    // Never two copies of one chunk at once: the older could land last, with data the newer replaced.
    const busy = this.opOver(first);
    if (busy) {
      await busy.done;
      return;
    }
    const cap = this.limiter.requestCap(g) || MAX_COPY_REQUEST;
    let maxChunks = Math.max(1, Math.floor(Math.min(cap, MAX_COPY_REQUEST, this.params.bufSize) / g));
    const offset = first * g;
    // A hole is handled in one request however long it is, and costs no bandwidth.
    const hole = await this.holeChunks(first);
    if (hole > 0) maxChunks = hole;
    const end = this.bitmap.runEnd(first, maxChunks);
    const bytes = Math.min(end * g, this.source.length) - offset;
    if (hole === 0 && !(await this.limiter.take(bytes))) return;
    // The bitmap may have changed while the limiter slept.
    if (!this.bitmap.get(first)) return;
    const realEnd = this.clipToOps(first, this.bitmap.runEnd(first, end - first));
    const realBytes = Math.min(realEnd * g, this.source.length) - offset;
    this.cursor = realEnd >= this.bitmap.chunks ? 0 : realEnd;
    this.bitmap.clearChunks(first, realEnd);
    this.control.setBusy(true);
    this.bytesInFlight += realBytes;
    const op: Op = { first, end: realEnd, bytes: realBytes, done: Promise.resolve() };
    op.done = this.copyOp(op, offset);
    this.ops.add(op);
  }

  /** The copy in flight that covers chunk `chunk`, if any. */
  private opOver(chunk: number): Op | undefined {
    for (const op of this.ops) if (op.first <= chunk && chunk < op.end) return op;
    return undefined;
  }

  /** `end` lowered to the first chunk after `first` that a copy in flight covers. */
  private clipToOps(first: number, end: number): number {
    for (const op of this.ops) if (op.first > first && op.first < end) end = op.first;
    return end;
  }

  /** Whole dirty chunks from `first` that read as zeros in the source (0: data there). */
  private async holeChunks(first: number): Promise<number> {
    const g = this.params.granularity;
    const runEnd = this.bitmap.runEnd(first, this.bitmap.chunks);
    const offset = first * g;
    const st = await blockStatusNode(this.source, offset, Math.min(runEnd * g, this.source.length) - offset);
    if (!(st.status & STATUS.ZERO)) return 0;
    const end = offset + st.bytes >= this.source.length ? this.bitmap.chunks : Math.floor((offset + st.bytes) / g);
    return Math.max(0, end - first);
  }

  private async copyOp(op: Op, offset: number): Promise<void> {
    const buf = this.pool.take();
    try {
      await copyRange(this.source, this.target, offset, op.bytes, buf, { unmap: this.params.unmap });
      this.copied += op.bytes;
      this.writeBehind.wrote(op.bytes);
    } catch (err) {
      this.bitmap.set(offset, op.bytes);
      if ((await this.onCopyError(err)) === 'fail') this.failure ??= err;
    } finally {
      this.pool.give(buf);
      this.bytesInFlight -= op.bytes;
      this.ops.delete(op);
      this.updateProgress();
    }
  }

  /** Copies everything still dirty and flushes the target; runs inside a drained section. */
  async finalCopy(): Promise<void> {
    await this.waitOps();
    const g = this.params.granularity;
    const buf = this.pool.take();
    try {
      for (let first = this.bitmap.nextDirty(0); first >= 0; first = this.bitmap.nextDirty(0)) {
        const end = this.bitmap.runEnd(first, Math.max(1, Math.floor(MAX_COPY_REQUEST / g)));
        const offset = first * g;
        const bytes = Math.min(end * g, this.source.length) - offset;
        this.bitmap.clearChunks(first, end);
        try {
          await copyRange(this.source, this.target, offset, bytes, buf, { unmap: this.params.unmap });
        } catch (err) {
          this.bitmap.set(offset, bytes);
          throw RunBase.failure(err);
        }
        this.copied += bytes;
      }
      await this.writeBehind.flush();
    } finally {
      this.pool.give(buf);
      this.updateProgress();
    }
  }

  release(): void {
    this.removeNotifier();
  }
}
