/**
 * What an export type (NBD, FUSE, vhost-user-blk) provides to the export
 * registry: QEMU's BlockExportDriver. The registry does what every type
 * shares (id checks, the iothread, the edge to the node, the event at
 * removal); the driver checks its own options and runs its data path.
 * All of it is GS code.
 */
import type { BlockNode } from '../block/global-state/block-node';

export type BlockExportType = 'nbd' | 'fuse' | 'vhost-user-blk';

/** The members of BlockExportOptions that every type has. */
export interface BlockExportCommon {
  id: string;
  'node-name': string;
  'fixed-iothread'?: boolean;
  iothread?: string;
  writable?: boolean;
  writethrough?: boolean;
}

/** BlockExportOptions: the common members and the type's own (flat, as QAPI unions are). */
export type BlockExportOptions = BlockExportCommon & { type: BlockExportType } & Record<string, unknown>;

/** A running export's data path, as its driver runs it. */
export interface ExportInstance {
  /** How many clients are connected: a `safe` removal refuses while there are any. */
  clients(): Promise<number>;
  /** Stops serving: drops the clients and resolves once their requests in flight have finished. */
  remove(): Promise<void>;
}

export interface ExportDriver {
  readonly type: BlockExportType;
  /**
   * Checks the type's options against the node before anything is taken,
   * and says which permissions the export's edge takes and shares.
   * Throws the reference's error for bad options.
   */
  prepare(opts: BlockExportOptions, exp: ExportHandle): ExportPlan;
}

/** The registry's export as a driver sees it. */
export interface ExportHandle {
  readonly id: string;
  /** The node served now: a snapshot's overlay may take the place of the node first exported. */
  readonly node: BlockNode;
  /** Set once removal has begun: the export takes no new clients. */
  readonly shuttingDown: boolean;
}

/** What `prepare` decided: the edge's permissions and how to start serving once the edge exists. */
export interface ExportPlan {
  perm: number;
  shared: number;
  /** Starts serving `node` (the edge is attached); a failure detaches the edge again. */
  start(): Promise<ExportInstance>;
}
