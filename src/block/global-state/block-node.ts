/**
 * The GS half of a node and the edges of the graph. Only the main loop reads
 * or changes these; I/O contexts hold a view built from descriptors.
 */
import type { IoContext } from './io-context';
import type { GsDriver } from './driver-gs';

/** A user of a node that is not itself a node: an export, a job, the monitor's BlockBackend. */
export interface BackendParent {
  readonly kind: 'backend';
  /** Shown in x-debug-query-block-graph and in permission conflicts. */
  readonly name: string;
  /** Type in x-debug-query-block-graph: 'block-backend', 'block-job', 'block-export'. */
  readonly graphType: 'block-backend' | 'block-job' | 'block-export';
  /** A block job's type, for QEMU's description of it ("backup job 'j0'"). */
  readonly jobType?: string;
  /** Creation order among backend parents: QEMU lists BlockBackends in that order. */
  readonly serial?: number;
}

export type GraphParent = BlockNode | BackendParent;

export interface BdrvChild {
  readonly role: string;
  readonly parent: GraphParent;
  /** Changes only when the graph replaces a node (`replaceNode`). */
  child: BlockNode;
  perm: number;
  shared: number;
}

export interface NodeCommonOptions {
  readOnly: boolean;
  autoReadOnly: boolean;
  forceShare: boolean;
  discard: 'ignore' | 'unmap';
  detectZeroes: 'off' | 'on' | 'unmap';
  cacheDirect: boolean;
  cacheNoFlush: boolean;
}

export class BlockNode {
  readonly kind = 'node';
  readonly children: BdrvChild[] = [];
  readonly parents: BdrvChild[] = [];
  /** > 0 while inside a drained section. */
  quiesce = 0;
  /**
   * Holders that are not parents (an amend job until it is dismissed, as
   * QEMU's bdrv_ref): while any remain, blockdev-del refuses the node.
   */
  references = 0;
  /** True once the I/O half exists in `ctx`. */
  attached = false;
  writeThreshold = 0;

  constructor(
    readonly name: string,
    /** Named by qbd (`#blockN`) because the user gave no node-name. */
    readonly autoNamed: boolean,
    /** Created by blockdev-add or --blockdev at the top level: only these can be deleted by name. */
    readonly monitorOwned: boolean,
    readonly driver: GsDriver,
    /** The options as given, children replaced by their node names. */
    readonly options: Record<string, unknown>,
    readonly common: NodeCommonOptions,
    public state: unknown,
    public length: number,
    public ctx: IoContext,
    public readOnly: boolean,
    readonly requestAlignment: number,
    readonly maxTransfer: number,
  ) {}

  child(role: string): BlockNode | undefined {
    return this.children.find((c) => c.role === role)?.child;
  }

  /** Union of what parents take, intersection of what they share. */
  cumulativePerms(): { perm: number; shared: number } {
    let perm = 0;
    let shared = 0xf;
    for (const p of this.parents) {
      perm |= p.perm;
      shared &= p.shared;
    }
    return { perm, shared };
  }
}
