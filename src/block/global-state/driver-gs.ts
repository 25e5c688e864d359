/**
 * The GS callback table of a block driver: open, close, child permissions,
 * and what queries show. Runs on the main loop only. A driver is
 * `{ descriptor, gs, io }`: this half never loads in a worker.
 */
import type { BlockDriverDescriptor } from '../common/driver-descriptor';
import type { InternalSnapshotInfo, InternalSnapshotResult } from '../common/internal-snapshot';
import type { NodeRequest, NodeRequestResult } from '../common/io-context-protocol';
import type { StoredBitmap } from '../common/shared-dirty-bitmap';
import type { BdrvChild, BlockNode } from './block-node';

/** What `open` may use: its children (already open), and I/O on them. */
export interface OpenContext {
  readonly nodeName: string;
  readonly readOnly: boolean;
  readonly cacheDirect: boolean;
  /** Opens (or looks up, for a reference) the child given by option `option`, attached in role `role`. */
  openChild(option: string, role: string, required: boolean): Promise<BlockNode | undefined>;
  /** I/O on an already-open child, through its I/O context. */
  childRequest(child: BlockNode, request: NodeRequest): Promise<NodeRequestResult>;
}

export interface OpenResult<S = unknown> {
  /** Driver state sent to the I/O half (structured-clone data). */
  state: S;
  length: number;
  requestAlignment?: number;
  maxTransfer?: number;
  /** Set when the image can only be opened read-only (e.g. a read-only file with auto-read-only). */
  readOnly?: boolean;
}

export interface ChildPerms {
  perm: number;
  shared: number;
}

export interface GsDriver<S = any> {
  readonly descriptor: BlockDriverDescriptor;
  /** Whether QEMU's driver answers bdrv_get_info(), which decides whether queries show `dirty-flag`. */
  readonly hasDriverInfo?: boolean;
  /** Whether the driver writes compressed clusters (a backup's `compress: true` needs it). */
  readonly supportsCompressedWrites?: boolean;
  /** Whether the format can have a backing node (QEMU's supports_backing): overlays must. */
  readonly supportsBacking?: boolean;
  /** Options that identify the node's content for `json:` filenames (QEMU's strong runtime options). */
  readonly strongOptions: readonly string[];

  open(ctx: OpenContext, options: Record<string, unknown>): Promise<OpenResult<S>>;
  /** Releases what `open` took (fds, locks) after the I/O half is gone. */
  close?(node: BlockNode): Promise<void> | void;
  /** Permissions to take on a child, given what the node's parents take on it. */
  childPerms(node: BlockNode, role: string, perm: number, shared: number): ChildPerms;
  /**
   * Switching between read-only and read-write (blockdev-reopen, and jobs
   * that write a node opened read-only), for drivers whose descriptor
   * depends on it (a file opened O_RDONLY): reopens it, keeps the image
   * locks, hands the I/O half the new state. The caller drains the node and
   * updates `readOnly` and the permissions.
   */
  reopenWritable?(node: BlockNode, writable: boolean): Promise<void>;
  /** Called when the node's cumulative permissions change (the file driver updates image locks). */
  setPerms?(node: BlockNode, perm: number, shared: number): void;
  /**
   * Rewrites the backing file name and format the image records
   * (change-backing-file, and commit and stream when they relink a chain).
   * `name` undefined removes it. The caller drains the node and makes it
   * writable. Errors carry an errno `code`.
   */
  changeBackingFile?(node: BlockNode, name: string | undefined, format: string | undefined): Promise<void>;
  /**
   * x-blockdev-change: attaching a node as a new child at run time, and
   * detaching one, for drivers built of interchangeable children (QEMU's
   * quorum). The caller has checked the names.
   */
  addChild?(node: BlockNode, child: BlockNode): Promise<void>;
  delChild?(node: BlockNode, child: BdrvChild): Promise<void>;
  /**
   * Present for formats that keep internal snapshots: the snapshots the
   * image holds now. The I/O half takes and deletes them.
   */
  internalSnapshots?(node: BlockNode): readonly InternalSnapshotInfo[];
  /** Records what an internal snapshot operation of the I/O half changed. */
  internalSnapshotsChanged?(node: BlockNode, result: InternalSnapshotResult): void;
  /** The file name a query shows, when the node has one of its own (a path, an URI). */
  plainFilename?(node: BlockNode): string | undefined;
  /** The node's length now, when it can change behind the GS half's back (a file a format grew). */
  currentLength?(node: BlockNode): number | undefined;
  /** Allocated bytes on the host for `actual-size`, when meaningful. */
  allocatedSize?(node: BlockNode): number | undefined;
  /** Image facts a query shows (ImageInfo's cluster-size, dirty-flag, backing-filename…), for formats that have them. */
  imageInfo?(node: BlockNode): ImageFacts;
  /**
   * Present for formats that store dirty bitmaps: why a new persistent
   * bitmap cannot be stored (undefined when it can), given how many the
   * node already has.
   */
  persistentBitmapRefusal?(node: BlockNode, name: string, granularity: number, stored: number): string | undefined;
  /** Persistent dirty bitmaps found in the image at open, handed over once after the node exists. */
  takeStoredBitmaps?(node: BlockNode): StoredBitmap[];
  /** `format-specific` of ImageInfo (e.g. qcow2's compat, refcount-bits…). */
  formatSpecific?(node: BlockNode): Record<string, unknown> | undefined;
  /**
   * blockdev-create for this driver (the `options` are the BlockdevCreateOptions
   * variant). Runs in the job's run step on the main loop; long I/O goes
   * through `ctx`.
   */
  create?(options: Record<string, unknown>, ctx: CreateContext): Promise<void>;
  /**
   * x-blockdev-amend for this driver (`options` are the BlockdevAmendOptions
   * variant, of the node's own driver). Runs in the job's run step on the
   * main loop; a thrown error's message becomes the job's error.
   */
  amend?(node: BlockNode, options: Record<string, unknown>, force: boolean): Promise<void>;
  /**
   * Creates an image file at a path, as QEMU's bdrv_img_create does for
   * blockdev-snapshot-sync; `options` are the format's creation options
   * (size, backing-file, backing-fmt).
   */
  createImageFile?(filename: string, options: Record<string, unknown>): Promise<void>;
}

/** What a format driver reports for ImageInfo. */
export interface ImageFacts {
  clusterSize?: number;
  dirtyFlag?: boolean;
  /** The backing file name as the image records it. */
  backingFilename?: string;
  backingFormat?: string;
  /** Internal snapshots (SnapshotInfo objects), when the image has any. */
  snapshots?: readonly object[];
}

/** What a driver's `create` may use. */
export interface CreateContext {
  /** Looks up a node given by name in the create options (e.g. qcow2's `file`). */
  node(name: string): BlockNode;
  /** I/O on an open node, through its I/O context. */
  request(node: BlockNode, request: NodeRequest): Promise<NodeRequestResult>;
  /** Whether the job was cancelled: long creations stop early. */
  readonly cancelled: boolean;
}
