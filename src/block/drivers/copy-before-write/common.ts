/**
 * copy-before-write, state both halves share. A node a user creates with
 * blockdev-add (image fleecing) does the copying itself, in its I/O half;
 * the node a backup job inserts has no state and passes requests through
 * (the job's write notifier on the source does the copying).
 */
import type { SharedDirtyBitmapState } from '../../common/shared-dirty-bitmap';

export interface CbwUserState {
  /** The copy granularity: clusters of this size are copied whole, once. */
  clusterSize: number;
  onCbwError: 'break-guest-write' | 'break-snapshot';
  /** cbw-timeout in milliseconds, 0 for none. */
  timeoutMs: number;
  /**
   * With `bitmap`: its dirty clusters when the node opened, at `clusterSize`
   * (a private copy). Only they are copied before write and readable in the
   * snapshot; without it every cluster is.
   */
  clusters?: SharedDirtyBitmapState;
}

export type CbwState = CbwUserState | undefined;

export const CBW_CLUSTER_SIZE = 64 * 1024;
