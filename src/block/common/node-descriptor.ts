/**
 * What an I/O context needs to build the I/O half of a node: produced by the
 * driver's GS `open`, sent across the thread boundary, and enough to build
 * the I/O half again when the node moves to another I/O context.
 */
import type { NodeStatsReport } from './node-stats';
import type { SharedDirtyBitmapState } from './shared-dirty-bitmap';

export interface ChildLink {
  /** The child's role as seen by the parent: 'file', 'backing', … */
  role: string;
  node: string;
}

export interface IoNodeDescriptor {
  nodeName: string;
  driver: string;
  /** Driver-specific state from `open` (structured-clone data: fds, offsets, parsed headers). */
  state: unknown;
  children: ChildLink[];
  length: number;
  readOnly: boolean;
  /** Minimum alignment of requests the driver accepts; the generic layer does read-modify-write below it. */
  requestAlignment: number;
  /** Largest request the driver takes in one call; 0 for no limit. */
  maxTransfer: number;
  /** `detect-zeroes` of the node: 'off' | 'on' | 'unmap'. */
  detectZeroes: 'off' | 'on' | 'unmap';
  /** `discard` of the node: whether discard requests are passed down. */
  discard: 'ignore' | 'unmap';
  /** The node's dirty bitmaps (shared memory): kept when the node moves to another context. */
  dirtyBitmaps?: SharedDirtyBitmapState[];
  /** block-set-write-threshold's value (0: none); kept when the node moves to another I/O context. */
  writeThreshold?: number;
  /** The I/O counters the node had in its former context, when it moves to another. */
  stats?: NodeStatsReport;
}
