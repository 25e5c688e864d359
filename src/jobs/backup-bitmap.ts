/**
 * The dirty bitmap of a backup job (`bitmap`, `bitmap-mode`): QEMU's checks
 * of the arguments, in its order and words; freezing the bitmap while the
 * job runs (busy, its writes going to a successor); and its fate when the
 * job ends:
 *
 * - on-success: after success the bitmap holds only what was written during
 *   the job; after failure it is as if the job never ran.
 * - never: the bitmap is only read (sync=bitmap) and keeps every bit.
 * - always: as on-success, and after failure the clusters the job did not
 *   copy are dirty again.
 */
import { SharedDirtyBitmap, type SharedDirtyBitmapState } from '../block/common/shared-dirty-bitmap';
import type { BlockNode } from '../block/global-state/block-node';
import { abdicateBitmap, CHECK_ALLOW_RO, CHECK_DEFAULT, checkBitmap, createSuccessor, findBitmap, reclaimBitmap, type BdrvDirtyBitmap } from '../block/global-state/dirty-bitmaps';
import { QmpError } from '../qmp/errors';

export type BitmapSyncMode = 'on-success' | 'never' | 'always';
export type BackupSync = 'top' | 'full' | 'none' | 'incremental' | 'bitmap';

export interface BackupBitmapArgs {
  sync: BackupSync;
  bitmap?: string;
  'bitmap-mode'?: string;
}

/**
 * Checks the bitmap arguments as QEMU's do_backup_common() does; returns the
 * sync mode with `incremental` turned into `bitmap` + on-success, and the
 * bitmap with its mode when one is given.
 */
export function checkBackupBitmapArgs(args: BackupBitmapArgs, source: BlockNode): { sync: Exclude<BackupSync, 'incremental'>; bitmap?: BdrvDirtyBitmap; mode?: BitmapSyncMode } {
  let sync = args.sync;
  let mode = args['bitmap-mode'] as BitmapSyncMode | undefined;
  // Checked before 'incremental' becomes 'bitmap', so that the message names the mode asked for.
  if ((sync === 'bitmap' || sync === 'incremental') && args.bitmap === undefined) {
    throw QmpError.generic(`must provide a valid bitmap name for '${sync}' sync mode`);
  }
  if (sync === 'incremental') {
    if (mode !== undefined && mode !== 'on-success') throw QmpError.generic(`Bitmap sync mode must be 'on-success' when using sync mode 'incremental'`);
    sync = 'bitmap';
    mode = 'on-success';
  }
  let bitmap: BdrvDirtyBitmap | undefined;
  if (args.bitmap !== undefined) {
    bitmap = findBitmap(source, args.bitmap);
    if (!bitmap) throw QmpError.generic(`Bitmap '${args.bitmap}' could not be found`);
    if (mode === undefined) throw QmpError.generic('Bitmap sync mode must be given when providing a bitmap');
    checkBitmap(bitmap, CHECK_ALLOW_RO);
    if (sync === 'none') throw QmpError.generic(`sync mode 'none' does not produce meaningful bitmap outputs`);
    if (mode === 'never' && sync !== 'bitmap') throw QmpError.generic(`Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '${sync}'`);
  } else if (mode !== undefined) {
    throw QmpError.generic('Cannot specify bitmap sync mode without a bitmap');
  }
  return { sync, bitmap, mode };
}

/** A backup's hold on its bitmap, from the job's creation to its end. */
export class BackupBitmap {
  /** Where the run half leaves the clusters it did not copy (mode always, on failure). */
  readonly remaining: SharedDirtyBitmap;

  private constructor(
    private readonly bm: BdrvDirtyBitmap,
    private readonly mode: BitmapSyncMode,
    clusterSize: number,
  ) {
    this.remaining = SharedDirtyBitmap.create(bm.size, clusterSize, false);
  }

  /** QEMU's backup_job_create(): a bitmap the job may change must be writable; then it is frozen. */
  static async freeze(bm: BdrvDirtyBitmap, mode: BitmapSyncMode, clusterSize: number): Promise<BackupBitmap> {
    if (mode !== 'never') checkBitmap(bm, CHECK_DEFAULT);
    const held = new BackupBitmap(bm, mode, clusterSize);
    await createSuccessor(bm);
    return held;
  }

  /** What the run half reads: the frozen bits (sync=bitmap copies their clusters). */
  get source(): SharedDirtyBitmapState {
    return this.bm.bits.state;
  }

  /** QEMU's backup_cleanup_sync_bitmap(), from the job's commit (`ok`) or abort. */
  async settle(ok: boolean): Promise<void> {
    const sync = (ok || this.mode === 'always') && this.mode !== 'never';
    const bm = sync ? await abdicateBitmap(this.bm) : await reclaimBitmap(this.bm);
    if (!ok && this.mode === 'always') bm.bits.merge(this.remaining);
  }
}
