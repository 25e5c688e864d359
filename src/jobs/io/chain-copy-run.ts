/**
 * The run half of block-stream and of an intermediate block-commit, in the
 * I/O context of the chain: one pass over the source in 512 KiB steps
 * (QEMU's chunk for both jobs), copying each range whose data lies between
 * the source (stream: below it) and the base into the target. Progress
 * counts every range passed, copied or not, as QEMU's does.
 *
 * Stream copies into the node that guests keep writing: a copy and a guest
 * write to the same range must not interleave, or the copy's old data
 * could land over the new. Each copy holds its range, guest writes to it
 * wait, and a copy waits for guest writes already under way, then looks
 * again whether the range still needs it.
 */
import type { Channel } from '../../common/channel';
import { STATUS, type BlockStatus } from '../../block/common/io-types';
import type { IoNode } from '../../block/io/io-node';
import { RangeLocks } from '../../block/io/range-locks';
import { blockStatusNode, readNode, writeNode, writeZeroesNode } from '../../block/io/request';
import { addWriteNotifier } from '../../block/io/write-notifiers';
import type { ChainCopyRunParams, JobControl } from '../common/job-control';
import { CopyError, copyRange } from './copy-range';
import { RunBase } from './run-base';
import { WriteBehind } from './write-behind';

const CHUNK = 512 * 1024;
/** What a commit without a speed limit copies at once, and its largest request. */
const PIECE = 1024 * 1024;
const BATCH_BYTES = 8 * PIECE;

async function onSide<T>(side: 'source' | 'target', p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new CopyError(side, err);
  }
}

export class ChainCopyRun extends RunBase {
  private readonly buf = Buffer.allocUnsafeSlow(CHUNK);
  /** The batch's buffers, made as needed. */
  private readonly bufs: Buffer[] = [];
  private readonly locks = new RangeLocks();
  /** Releases of guest writes holding their range, by "offset:bytes". */
  private readonly guestHolds = new Map<string, Array<() => void>>();
  /** Set while the run issues its own write, whose notifier must not wait for the run's own hold. */
  private ownWrite = false;
  private readonly removeNotifier: () => void = () => undefined;
  private readonly writeBehind: WriteBehind;

  constructor(
    id: string,
    control: JobControl,
    channel: Channel,
    private readonly source: IoNode,
    private readonly target: IoNode,
    private readonly params: ChainCopyRunParams,
  ) {
    super(id, control, channel, params.onError, params.onError);
    this.writeBehind = new WriteBehind(target);
    if (source === target) {
      this.removeNotifier = addWriteNotifier(target, {
        before: (offset, bytes) => (this.ownWrite ? undefined : this.holdForGuest(offset, bytes)),
        after: (offset, bytes) => {
          this.guestHolds.get(`${offset}:${bytes}`)?.shift()?.();
          return undefined;
        },
      });
    }
  }

  private async holdForGuest(offset: number, bytes: number): Promise<void> {
    const release = await this.locks.acquire(offset, bytes);
    const key = `${offset}:${bytes}`;
    const list = this.guestHolds.get(key) ?? [];
    list.push(() => {
      release();
      if (list.length === 0) this.guestHolds.delete(key);
    });
    this.guestHolds.set(key, list);
  }

  private wanted(st: BlockStatus): boolean {
    return st.depth !== undefined && st.depth >= this.params.minDepth && st.depth < this.params.baseDepth;
  }

  async run(): Promise<{ ended: 'done' | 'cancelled' }> {
    const len = this.source.length;
    this.control.setProgress(0, len);
    let ignored: unknown;
    let offset = 0;
    try {
      while (offset < len) {
        if (this.control.pauseRequested) await this.pausePoint();
        if (this.hardCancelled) return { ended: 'cancelled' };
        this.control.setBusy(true);
        let n: number;
        let copied = false;
        try {
          if (this.source !== this.target && this.control.speed <= 0) {
            n = await this.copyBatch(offset, len);
          } else {
            const st = await onSide('source', blockStatusNode(this.source, offset, Math.min(CHUNK, len - offset)));
            n = st.bytes;
            if (this.wanted(st)) {
              await this.copy(offset, n);
              copied = true;
              this.writeBehind.wrote(n);
            }
          }
        } catch (err) {
          const outcome = await this.onCopyError(err);
          if (outcome === 'fail') throw RunBase.failure(err);
          // Stream goes on past an ignored error but keeps the chain as it is at the end, as QEMU's does.
          if (this.params.kind === 'stream' && !this.control.pauseRequested) {
            ignored ??= err;
            n = Math.min(CHUNK, len - offset);
          } else {
            continue;
          }
        }
        offset += n;
        this.control.setProgress(offset, len);
        // As QEMU's loops: the time a copy costs is waited after it, so the first copy starts at once.
        // A pause or cancel ends the sleep (the limiter sees it); the loop then stops at its top.
        if (copied) await this.limiter.take(n);
      }
      await onSide('target', this.writeBehind.flush());
    } finally {
      await this.writeBehind.settle();
      this.control.setBusy(false);
    }
    if (ignored !== undefined) throw RunBase.failure(ignored);
    return { ended: 'done' };
  }

  /**
   * Without a speed limit, a commit copies a window of BATCH_BYTES at once,
   * in requests of up to PIECE bytes running side by side: the source is
   * read-only and every piece lands in its own range of the base, so the
   * copies need no order, and one 512 KiB request at a time would leave the
   * job waiting on each round trip. A failed piece fails the window (the
   * first failure by offset); retrying copies the window again, which
   * writes the same data. Returns the bytes passed.
   */
  private async copyBatch(offset: number, len: number): Promise<number> {
    const copies: Array<Promise<void>> = [];
    const end = Math.min(len, offset + BATCH_BYTES);
    let scanError: { err: unknown } | undefined;
    try {
      for (let at = offset; at < end; ) {
        const st = await onSide('source', blockStatusNode(this.source, at, end - at));
        if (this.wanted(st)) {
          for (let p = at; p < at + st.bytes; p += PIECE) {
            const bytes = Math.min(PIECE, at + st.bytes - p);
            const buf = (this.bufs[copies.length] ??= Buffer.allocUnsafeSlow(PIECE));
            copies.push(copyRange(this.source, this.target, p, bytes, buf, { unmap: false }).then(() => this.writeBehind.wrote(bytes)));
          }
        }
        at += st.bytes;
      }
    } catch (err) {
      scanError = { err };
    }
    // Every copy has ended before the window is left (its buffer may be used again at once).
    const failed = (await Promise.allSettled(copies)).find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (scanError) throw scanError.err;
    return end - offset;
  }

  private async copy(offset: number, bytes: number): Promise<void> {
    if (this.source !== this.target) {
      await copyRange(this.source, this.target, offset, bytes, this.buf, { unmap: false });
      return;
    }
    const release = await this.locks.acquire(offset, bytes);
    try {
      for (let at = offset; at < offset + bytes; ) {
        // Looked at again under the hold: a guest write may have filled it meanwhile.
        const st = await onSide('source', blockStatusNode(this.source, at, offset + bytes - at));
        if (this.wanted(st)) await this.copyInPlace(at, st);
        at += st.bytes;
      }
    } finally {
      release();
    }
  }

  /** Writes what the chain below shows into the node itself: zeros as zeros (never a hole, which would show the backing file). */
  private async copyInPlace(offset: number, st: BlockStatus): Promise<void> {
    const piece = this.buf.subarray(0, st.bytes);
    if (!(st.status & STATUS.ZERO)) await onSide('source', readNode(this.source, offset, piece));
    this.ownWrite = true;
    const write = st.status & STATUS.ZERO ? writeZeroesNode(this.target, offset, st.bytes, { mayUnmap: false }) : writeNode(this.target, offset, piece);
    this.ownWrite = false;
    await onSide('target', write);
  }

  async finalCopy(): Promise<void> {
    await this.writeBehind.flush();
  }

  release(): void {
    this.removeNotifier();
  }
}
