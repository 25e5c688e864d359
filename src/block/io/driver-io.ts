/**
 * The I/O callback table of a block driver. The generic layer (`request.ts`)
 * guarantees every callback: offset and length inside the node, aligned to
 * the node's `requestAlignment`, no longer than `maxTransfer` when set, and
 * writes only on writable nodes. Drivers reach their children through the
 * same generic layer.
 */
import type { InternalSnapshotOp, InternalSnapshotResult } from '../common/internal-snapshot';
import type { BlockStatus, WriteFlags, ZeroFlags } from '../common/io-types';
import type { IoNodeDescriptor } from '../common/node-descriptor';
import type { IoNode } from './io-node';

export interface IoDriver<S = unknown> {
  readonly name: string;
  /** Builds the I/O state from what GS `open` produced. */
  attach(desc: IoNodeDescriptor): S;
  /** The node's current length, when it can change behind the GS half's back (a file its parent grew). */
  currentLength?(state: S): number | undefined;
  /** Writes back caches and releases I/O resources; the GS half closes fds. */
  detach?(node: IoNode<S>): Promise<void>;
  /** Called while the node (and its children) can still be written, just before it becomes read-only: a format leaves its image clean. */
  beforeReadOnly?(node: IoNode<S>): Promise<void>;

  /** Fills `buf` with `buf.length` bytes from `offset`. */
  read(node: IoNode<S>, offset: number, buf: Buffer): Promise<void>;
  write(node: IoNode<S>, offset: number, buf: Buffer, flags: WriteFlags): Promise<void>;
  /** Absent: the generic layer writes a zeroed buffer instead. */
  writeZeroes?(node: IoNode<S>, offset: number, bytes: number, flags: ZeroFlags): Promise<void>;
  /** Absent: discard is a no-op (it is only a hint). */
  discard?(node: IoNode<S>, offset: number, bytes: number): Promise<void>;
  /** Absent: flush goes to the children. */
  flush?(node: IoNode<S>): Promise<void>;
  /** Absent: everything is allocated data. */
  blockStatus?(node: IoNode<S>, offset: number, bytes: number): Promise<BlockStatus>;
  /** Takes or deletes an internal snapshot (formats that keep them); the node is drained. */
  internalSnapshot?(node: IoNode<S>, op: InternalSnapshotOp): Promise<InternalSnapshotResult>;
  /** Writes the node's persistent dirty bitmaps to the image (formats that store them). */
  storeBitmaps?(node: IoNode<S>): Promise<void>;
  /**
   * Counters of the driver's own, shown as query-blockstats' `driver-specific`
   * (the file driver's discards); kept in `node.stats.driver` so they move with
   * the node. Absent: the node shows none.
   */
  driverStats?(node: IoNode<S>): Record<string, number>;
  /** Absent: the node cannot be resized. Returns the new length. */
  truncate?(node: IoNode<S>, length: number, exact: boolean, preallocation: string): Promise<number>;
}
