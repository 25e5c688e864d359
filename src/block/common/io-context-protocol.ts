/**
 * The messages between the main loop and an I/O context. Every graph change
 * the main loop makes reaches the context through these, inside a drained
 * section; I/O the main loop needs (reading a header while opening, truncate
 * for block_resize, flush at quit) goes through `nodeRequest`.
 */
import { notificationType, requestType } from '../../common/channel';
import type { InternalSnapshotOp, InternalSnapshotResult } from './internal-snapshot';
import type { BlockStatus, WriteFlags, ZeroFlags } from './io-types';
import type { ChildLink, IoNodeDescriptor } from './node-descriptor';
import type { NodeStatsReport } from './node-stats';
import type { SharedDirtyBitmapState } from './shared-dirty-bitmap';

export const attachNode = requestType<IoNodeDescriptor, void>('node.attach');
/** Flushes and drops the I/O half (metadata caches are written back first); answers the node's final counters. */
export const detachNode = requestType<{ nodeName: string }, NodeStatsReport>('node.detach');
export const setChildren = requestType<{ nodeName: string; children: ChildLink[] }, void>('node.set-children');
/** Hands the users that entered the graph at node `from` (exports) over to node `to`. */
export const replaceBackendRoot = requestType<{ from: string; to: string }, void>('node.replace-backend-root');
/** Gives a protocol node's I/O half a new driver state (a file descriptor reopened read-write). */
export const replaceState = requestType<{ nodeName: string; state: unknown }, void>('node.replace-state');
export const updateNode = requestType<{ nodeName: string; length?: number; readOnly?: boolean; writeThreshold?: number }, void>('node.update');
/** Makes the node's driver write its persistent bitmaps to the image now (after one was removed). */
export const storeBitmaps = requestType<{ nodeName: string }, void>('node.store-bitmaps');
/** Takes or deletes an internal snapshot in the node's image (the node is drained). */
export const internalSnapshot = requestType<{ nodeName: string; op: InternalSnapshotOp }, InternalSnapshotResult>('node.internal-snapshot');
/** Replaces the dirty bitmaps writes to the node mark (the bits are shared memory, not copied). */
export const setDirtyBitmaps = requestType<{ nodeName: string; bitmaps: SharedDirtyBitmapState[] }, void>('node.set-dirty-bitmaps');
/** The I/O counters of every node in the context (query-blockstats). */
export const nodeStats = requestType<void, NodeStatsReport[]>('context.node-stats');

/**
 * Stops new requests entering the given nodes (and their parents) and waits
 * for in-flight ones. `section` names the drained section: its end undoes
 * exactly what its begin did, even if the graph changed in between.
 */
export const drainBegin = requestType<{ section: number; nodes: string[] }, void>('drain.begin');
export const drainEnd = requestType<{ section: number }, void>('drain.end');

export type NodeRequest =
  | { op: 'read'; offset: number; bytes: number }
  | { op: 'write'; offset: number; data: Uint8Array; flags?: WriteFlags }
  | { op: 'write-zeroes'; offset: number; bytes: number; flags?: ZeroFlags }
  | { op: 'discard'; offset: number; bytes: number }
  | { op: 'flush' }
  | { op: 'block-status'; offset: number; bytes: number }
  | { op: 'truncate'; length: number; exact: boolean; preallocation: string };

export type NodeRequestResult = { data?: Uint8Array; status?: BlockStatus; length?: number };

/** I/O issued by GS code on a node, through the generic request layer. */
export const nodeRequest = requestType<{ nodeName: string; request: NodeRequest }, NodeRequestResult>('node.request');

/** Asks the context to finish: flush every node, then exit. */
export const shutdownContext = requestType<void, void>('context.shutdown');

/** Sent by an I/O context: something the main loop must turn into a QMP event or state change. */
export const ioEvent = notificationType<{ kind: string; node?: string; data?: unknown }>('io.event');
