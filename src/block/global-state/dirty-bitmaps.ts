/**
 * Dirty bitmaps of nodes, the main loop's side: names, flags (persistent,
 * busy, inconsistent, read-only), the checks QEMU makes before a bitmap is
 * used, and the list each node's I/O half marks. The bits themselves are
 * shared memory (`common/shared-dirty-bitmap.ts`): I/O contexts set them
 * on the write path, this side reads, clears and merges them.
 */
import { createHash } from 'node:crypto';
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import { SharedDirtyBitmap, type SharedDirtyBitmapState } from '../common/shared-dirty-bitmap';
import type { BlockNode } from './block-node';
import { findNode } from './graph';

/** QEMU's BDRV_BITMAP_MAX_NAME_SIZE. */
export const BITMAP_MAX_NAME = 1023;

export class BdrvDirtyBitmap {
  /** Used by an operation (a backup job, an export): QMP may not change it. */
  busy = false;
  /** Saved to the image when the node closes or flushes (qcow2 only). */
  persistent = false;
  /** Found in use in the image at open: unusable until removed. */
  inconsistent = false;
  /** Loaded from an image opened read-only: its bits may not change. */
  readonly = false;
  /** Takes the writes while an operation owns this bitmap (QEMU's successor). */
  successor: BdrvDirtyBitmap | undefined;

  constructor(
    /** Undefined for the anonymous bitmaps operations make for themselves. */
    public name: string | undefined,
    readonly node: BlockNode,
    public bits: SharedDirtyBitmap,
  ) {}

  get granularity(): number {
    return this.bits.granularity;
  }

  get size(): number {
    return this.bits.length;
  }

  get enabled(): boolean {
    return this.bits.recording;
  }

  set enabled(on: boolean) {
    this.bits.recording = on;
  }

  /** QEMU's bdrv_dirty_bitmap_recording(): the bitmap or its successor takes writes. */
  get recording(): boolean {
    return this.enabled || (this.successor?.enabled ?? false);
  }
}

/** Newest first, as QEMU lists a node's bitmaps. */
const bitmapsByNode = new WeakMap<BlockNode, BdrvDirtyBitmap[]>();

export function bitmapsOf(node: BlockNode): readonly BdrvDirtyBitmap[] {
  assertMainLoop();
  return bitmapsByNode.get(node) ?? [];
}

export function findBitmap(node: BlockNode, name: string): BdrvDirtyBitmap | undefined {
  assertMainLoop();
  return bitmapsOf(node).find((b) => b.name === name);
}

/** What the node's I/O half must mark (the disabled ones check their own flag) and its driver store. */
export function bitmapStates(node: BlockNode): SharedDirtyBitmapState[] {
  return bitmapsOf(node).map((b) => ({ ...b.bits.state, name: b.name, persistent: b.persistent, inconsistent: b.inconsistent }));
}

/** Tells the node's I/O context which bitmaps it marks. */
export async function syncBitmaps(node: BlockNode): Promise<void> {
  if (!node.attached) return;
  await node.ctx.channel.request(proto.setDirtyBitmaps, { nodeName: node.name, bitmaps: bitmapStates(node) });
}

/** QEMU's bdrv_get_default_bitmap_granularity(): the cluster size within [4 KiB, 64 KiB], else 64 KiB. */
export function defaultGranularity(node: BlockNode): number {
  assertMainLoop();
  const cluster = node.driver.imageInfo?.(node)?.clusterSize ?? 0;
  return cluster > 0 ? Math.min(65536, Math.max(4096, cluster)) : 65536;
}

/** QEMU's bdrv_create_dirty_bitmap(): a clean, enabled bitmap over the node's current length. */
export async function createBitmap(node: BlockNode, granularity: number, name: string | undefined, persistent = false): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  if (name !== undefined) {
    if (findBitmap(node, name)) throw QmpError.generic(`Bitmap already exists: ${name}`);
    if (Buffer.byteLength(name) > BITMAP_MAX_NAME) throw QmpError.generic(`Bitmap name too long: ${name}`);
  }
  const bm = new BdrvDirtyBitmap(name, node, SharedDirtyBitmap.create(node.length, granularity, true));
  bm.persistent = persistent;
  await addBitmap(bm);
  return bm;
}

/** Puts a bitmap (new or loaded from an image) at the head of its node's list. */
export async function addBitmap(bm: BdrvDirtyBitmap): Promise<void> {
  assertMainLoop();
  bitmapsByNode.set(bm.node, [bm, ...bitmapsOf(bm.node)]);
  await syncBitmaps(bm.node);
}

/**
 * Takes the bitmaps the driver found in the image as persistent bitmaps of
 * the node, before its I/O half exists. A read-only image's bitmaps are
 * read-only; bitmaps found in use are inconsistent and record nothing.
 */
export function adoptStoredBitmaps(node: BlockNode): void {
  assertMainLoop();
  const stored = node.driver.takeStoredBitmaps?.(node) ?? [];
  for (const s of stored) {
    const bm = new BdrvDirtyBitmap(s.name, node, SharedDirtyBitmap.from(s.bits));
    bm.persistent = true;
    bm.inconsistent = s.inconsistent;
    bm.readonly = node.readOnly && !s.inconsistent;
    bm.enabled = s.enabled;
    bitmapsByNode.set(node, [bm, ...bitmapsOf(node)]);
  }
}

/** QEMU's bdrv_release_dirty_bitmap(): writes stop marking it once the I/O context has the new list. */
export async function releaseBitmap(bm: BdrvDirtyBitmap): Promise<void> {
  assertMainLoop();
  const list = bitmapsOf(bm.node).filter((b) => b !== bm);
  if (list.length > 0) bitmapsByNode.set(bm.node, list);
  else bitmapsByNode.delete(bm.node);
  await syncBitmaps(bm.node);
}

/**
 * QEMU's bdrv_dirty_bitmap_create_successor(): an operation (a backup)
 * freezes `bm` — busy, no longer recording — and an anonymous successor
 * takes the writes from now on, recording if `bm` was.
 */
export async function createSuccessor(bm: BdrvDirtyBitmap): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  if (bm.busy) throw QmpError.generic('Cannot create a successor for a bitmap that is in-use by an operation');
  if (bm.successor) throw QmpError.generic('Cannot create a successor for a bitmap that already has one');
  const child = new BdrvDirtyBitmap(undefined, bm.node, SharedDirtyBitmap.create(bm.size, bm.granularity, bm.enabled));
  bm.enabled = false;
  bm.successor = child;
  bm.busy = true;
  await addBitmap(child);
  return child;
}

/** QEMU's bdrv_dirty_bitmap_abdicate(): the successor takes the name (and persistence); `bm` is dropped. */
export async function abdicateBitmap(bm: BdrvDirtyBitmap): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  const child = bm.successor!;
  child.name = bm.name;
  child.persistent = bm.persistent;
  bm.name = undefined;
  bm.persistent = false;
  bm.successor = undefined;
  bm.busy = false;
  await releaseBitmap(bm);
  return child;
}

/** QEMU's bdrv_reclaim_dirty_bitmap(): the successor's bits join `bm`, which records again as the successor did. */
export async function reclaimBitmap(bm: BdrvDirtyBitmap): Promise<BdrvDirtyBitmap> {
  assertMainLoop();
  const child = bm.successor!;
  bm.bits.merge(child.bits);
  bm.enabled = child.enabled;
  bm.busy = false;
  bm.successor = undefined;
  await releaseBitmap(child);
  return bm;
}

/** Gives every bitmap of `node` the node's new length (after a resize): new bits are clean. */
export async function resizeBitmaps(node: BlockNode): Promise<void> {
  assertMainLoop();
  let changed = false;
  for (const bm of bitmapsOf(node)) {
    if (bm.size === node.length) continue;
    bm.bits = bm.bits.resized(node.length);
    changed = true;
  }
  if (changed) await syncBitmaps(node);
}

/** What bdrv_dirty_bitmap_check() refuses. */
export const CHECK = {
  BUSY: 1,
  RO: 2,
  INCONSISTENT: 4,
} as const;
export const CHECK_DEFAULT = CHECK.BUSY | CHECK.RO | CHECK.INCONSISTENT;
export const CHECK_ALLOW_RO = CHECK.BUSY | CHECK.INCONSISTENT;

/** QEMU's bdrv_dirty_bitmap_check(), with its words. */
export function checkBitmap(bm: BdrvDirtyBitmap, flags: number): void {
  if (flags & CHECK.BUSY && bm.busy) {
    throw QmpError.generic(`Bitmap '${bm.name}' is currently in use by another operation and cannot be used`);
  }
  if (flags & CHECK.RO && bm.readonly) {
    throw QmpError.generic(`Bitmap '${bm.name}' is readonly and cannot be modified`);
  }
  if (flags & CHECK.INCONSISTENT && bm.inconsistent) {
    throw QmpError.generic(`Bitmap '${bm.name}' is inconsistent and cannot be used`, 'Try block-dirty-bitmap-remove to delete this bitmap from disk');
  }
}

/** QEMU's block_dirty_bitmap_lookup(): the node, then the bitmap, each with its error. */
export function lookupBitmap(nodeName: string, name: string): BdrvDirtyBitmap {
  assertMainLoop();
  const node = findNode(nodeName);
  if (!node) throw QmpError.generic(`Node '${nodeName}' not found`);
  const bm = findBitmap(node, name);
  if (!bm) throw QmpError.generic(`Dirty bitmap '${name}' not found`);
  return bm;
}

/** x-debug-block-dirty-bitmap-sha256: SHA-256 of the bitmap serialized as QEMU serializes an HBitmap. */
export function bitmapSha256(bm: BdrvDirtyBitmap): string {
  return createHash('sha256').update(bm.bits.serialize()).digest('hex');
}

/** BlockDirtyInfo entries of a node, members added in the schema's order as QEMU's visitor adds them. */
export function dirtyBitmapInfo(node: BlockNode): Record<string, unknown>[] {
  assertMainLoop();
  return bitmapsOf(node).map((bm) => ({
    ...(bm.name !== undefined ? { name: bm.name } : {}),
    count: bm.bits.count(),
    granularity: bm.granularity,
    recording: bm.recording,
    busy: bm.busy,
    persistent: bm.persistent,
    ...(bm.inconsistent ? { inconsistent: true } : {}),
  }));
}
