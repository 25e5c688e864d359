/**
 * What the two halves of a block job share. The control half (main loop)
 * and the run half (the copy loop, in the I/O context of the job's nodes)
 * talk through a small SharedArrayBuffer control block for what must not
 * wait behind I/O — pause, cancel, complete, speed one way; progress and
 * busy the other — and through typed messages for the rest: start, the
 * final copy inside a drained section, readiness and errors.
 *
 * Plain data and atomics only: both worlds import this file.
 */
import type { SharedDirtyBitmapState } from '../../block/common/shared-dirty-bitmap';
import { notificationType, requestType } from '../../common/channel';

/** Int32 slots of the control block. */
const I = {
  /** 1 while the control half wants the run half parked at its pause point. */
  PAUSE: 0,
  /** 0 none, 1 soft (finish as completed, mirror after READY), 2 hard. */
  CANCEL: 1,
  /** 1 once job-complete was accepted. */
  COMPLETE: 2,
  /** Written by the run half: 1 while it has I/O in flight. */
  BUSY: 3,
  /** Bumped on every control change, so a sleeping run half wakes up (Atomics.notify). */
  WAKE: 4,
} as const;

/** BigInt64 slots (the block is 64 bytes: 8 int64 slots, the first 3 overlap the int32 slots). */
const L = {
  SPEED: 4,
  OFFSET: 5,
  LEN: 6,
} as const;

export const CONTROL_BYTES = 64;

/** Atomics.waitAsync (Node 16+), which the ES2022 library typings lack. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeout?: number): { async: boolean; value: Promise<string> | string };
}).waitAsync;

export const CANCEL_NONE = 0;
export const CANCEL_SOFT = 1;
export const CANCEL_HARD = 2;

/** A view on one job's control block; both halves build one on the same buffer. */
export class JobControl {
  private readonly i32: Int32Array;
  private readonly i64: BigInt64Array;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(CONTROL_BYTES)) {
    this.i32 = new Int32Array(buffer);
    this.i64 = new BigInt64Array(buffer);
  }

  private wake(): void {
    Atomics.add(this.i32, I.WAKE, 1);
    Atomics.notify(this.i32, I.WAKE);
  }

  // Written by the control half.

  setPaused(paused: boolean): void {
    Atomics.store(this.i32, I.PAUSE, paused ? 1 : 0);
    this.wake();
  }

  requestCancel(kind: typeof CANCEL_SOFT | typeof CANCEL_HARD): void {
    // A hard cancel is never weakened by a later soft one.
    if (Atomics.load(this.i32, I.CANCEL) < kind) Atomics.store(this.i32, I.CANCEL, kind);
    this.wake();
  }

  requestComplete(): void {
    Atomics.store(this.i32, I.COMPLETE, 1);
    this.wake();
  }

  setSpeed(bytesPerSecond: number): void {
    Atomics.store(this.i64, L.SPEED, BigInt(bytesPerSecond));
    this.wake();
  }

  // Read by the run half.

  get pauseRequested(): boolean {
    return Atomics.load(this.i32, I.PAUSE) === 1;
  }

  get cancel(): number {
    return Atomics.load(this.i32, I.CANCEL);
  }

  get completeRequested(): boolean {
    return Atomics.load(this.i32, I.COMPLETE) === 1;
  }

  get speed(): number {
    return Number(Atomics.load(this.i64, L.SPEED));
  }

  /** The change counter: read it before checking the flags, then wait with it, and no change is missed. */
  wakeSeq(): number {
    return Atomics.load(this.i32, I.WAKE);
  }

  /**
   * Resolves on the next control change after `seen` (at once if one already
   * happened), or after `ms`: a rate-limit sleep that pause and cancel interrupt.
   */
  async waitForChange(ms = Infinity, seen = this.wakeSeq()): Promise<void> {
    const r = waitAsync(this.i32, I.WAKE, seen, ms === Infinity ? undefined : Math.max(0, ms));
    if (r.async) await r.value;
  }

  // Written by the run half, read by the control half at any time (query-jobs needs no round trip).

  setProgress(offset: number, len: number): void {
    Atomics.store(this.i64, L.OFFSET, BigInt(offset));
    Atomics.store(this.i64, L.LEN, BigInt(len));
  }

  /** The run half parks itself (on-*-error=stop) before the control half hears of it. */
  parkSelf(): void {
    Atomics.store(this.i32, I.PAUSE, 1);
  }

  setBusy(busy: boolean): void {
    Atomics.store(this.i32, I.BUSY, busy ? 1 : 0);
  }

  get offset(): number {
    return Number(Atomics.load(this.i64, L.OFFSET));
  }

  get len(): number {
    return Number(Atomics.load(this.i64, L.LEN));
  }

  get busy(): boolean {
    return Atomics.load(this.i32, I.BUSY) === 1;
  }
}

export type OnError = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';

export interface MirrorRunParams {
  kind: 'mirror';
  /** The node whose data is copied (below the mirror_top filter). */
  source: string;
  target: string;
  sync: 'full' | 'top' | 'none';
  granularity: number;
  bufSize: number;
  copyMode: 'background' | 'write-blocking';
  unmap: boolean;
  /** sync=full into an image known to read as zeros (a new one): only what the source's chain allocates is copied. */
  allocatedOnly?: boolean;
  onSourceError: OnError;
  onTargetError: OnError;
  /** Active commit: only what lies above the base, chain depth 1 up to this (exclusive), starts dirty. */
  baseDepth?: number;
}

export interface BackupRunParams {
  kind: 'backup';
  source: string;
  target: string;
  sync: 'full' | 'top' | 'none' | 'bitmap';
  clusterSize: number;
  /** Write the target's clusters compressed. */
  compress: boolean;
  /** sync=bitmap: the frozen bitmap whose dirty clusters are copied. */
  syncBitmap?: SharedDirtyBitmapState;
  /** With a bitmap: where the run leaves the clusters it did not copy. */
  remaining?: SharedDirtyBitmapState;
  onSourceError: OnError;
  onTargetError: OnError;
}

/**
 * block-stream and intermediate block-commit: one pass over `source`,
 * copying every range whose data lies in the chain at depth `minDepth` up
 * to `baseDepth` (exclusive; 1 is `source` itself) into `target`. Stream
 * copies into `source` itself (minDepth 2), commit into its base.
 */
export interface ChainCopyRunParams {
  kind: 'stream' | 'commit';
  source: string;
  target: string;
  minDepth: number;
  baseDepth: number;
  onError: OnError;
}

export type RunParams = MirrorRunParams | BackupRunParams | ChainCopyRunParams;

/**
 * Sets up the run half (dirty tracking or copy-before-write starts here, so
 * nothing written after the reply escapes it). Resolves once armed.
 */
export const jobPrepare = requestType<{ id: string; control: SharedArrayBuffer; params: RunParams }, void>('job.prepare');

/** Runs the copy loop; resolves when it ends (done, completed, cancelled) and rejects on a reported error. */
export const jobRun = requestType<{ id: string }, { ended: 'done' | 'cancelled' }>('job.run');

/**
 * Copies whatever is still dirty and flushes the target. The control half
 * sends it inside a drained section of the job's nodes, so nothing new
 * arrives while it runs: the target is then an exact copy.
 */
export const jobFinalCopy = requestType<{ id: string }, void>('job.final-copy');

/** Disarms dirty tracking / copy-before-write and forgets the job. */
export const jobRelease = requestType<{ id: string }, void>('job.release');

/**
 * Run half to control half: readiness, errors, and arrival at a pause point
 * (rare; progress goes through the control block).
 */
export type JobNotice = { id: string; what: 'ready' } | { id: string; what: 'parked' } | { id: string; what: 'error'; operation: 'read' | 'write'; action: 'ignore' | 'report' | 'stop'; nospace: boolean };

export const jobNotice = notificationType<JobNotice>('job.notice');
