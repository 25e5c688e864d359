/**
 * External snapshots: blockdev-snapshot (an existing overlay) and
 * blockdev-snapshot-sync (an overlay image created here), as commands and
 * as `transaction` actions. The overlay takes the node's place for every
 * parent — other nodes, exports — and gets the node as its backing child,
 * all inside one drained section; on commit the old node becomes read-only,
 * as QEMU's external_snapshot_* steps do. Global state.
 */
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { registerTransactionAction, type TransactionAction, type TransactionContext } from '../../qmp/transaction-actions';
import * as proto from '../common/io-context-protocol';
import { PERM } from '../common/permissions';
import type { BdrvChild, BlockNode } from './block-node';
import { blockdevAdd, checkNotBlocked, closeIfUnused } from './blockdev';
import { drained } from './drain';
import { gsDrivers } from './driver-table';
import { attachChild, detachChild, findNode, refreshPerms, replaceNode, syncChildren } from './graph';
import { moveToContext } from './iothread-move';
import { nodeFilename } from './node-info';

export interface BlockdevSnapshotArgs {
  node: string;
  overlay: string;
}

export interface BlockdevSnapshotSyncArgs {
  device?: string;
  'node-name'?: string;
  'snapshot-file': string;
  'snapshot-node-name'?: string;
  format?: string;
  mode?: 'existing' | 'absolute-paths';
}

type Source = { kind: 'blockdev-snapshot'; args: BlockdevSnapshotArgs } | { kind: 'blockdev-snapshot-sync'; args: BlockdevSnapshotSyncArgs };

/** QEMU's bdrv_lookup_bs(): qbd has no named BlockBackends, so only node names are found. */
function lookupNode(device: string | undefined, nodeName: string | undefined): BlockNode {
  const node = nodeName === undefined ? undefined : findNode(nodeName);
  if (!node) throw QmpError.generic(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  return node;
}

/** Job edges stay on their node when an overlay takes its place (QEMU's stay_at_node). */
const staysAtNode = (edge: BdrvChild): boolean => edge.parent.kind === 'backend' && edge.parent.graphType === 'block-job';

/** Sends new children to the node parents whose edges moved. */
async function syncParents(edges: BdrvChild[]): Promise<void> {
  const parents = new Set<BlockNode>();
  for (const e of edges) if (e.parent.kind === 'node') parents.add(e.parent);
  for (const p of parents) await syncChildren(p);
}

/**
 * Makes `node` read-only after it became a backing node, with the children
 * it opened inline (its file), as QEMU's bdrv_reopen_set_read_only(): image
 * locks drop the write permission. Skipped when a user still writes it.
 * Returns when the I/O halves have switched too.
 */
function reopenReadOnly(node: BlockNode): Promise<unknown> {
  if (node.readOnly) return Promise.resolve();
  if (node.parents.some((e) => e.perm & (PERM.WRITE | PERM.RESIZE))) return Promise.resolve();
  const changed: BlockNode[] = [];
  const mark = (n: BlockNode): void => {
    if (n.readOnly) return;
    n.readOnly = true;
    n.common.readOnly = true;
    changed.push(n);
    for (const c of n.children) if (c.role !== 'backing' && !c.child.monitorOwned) mark(c.child);
  };
  mark(node);
  try {
    refreshPerms(node);
  } catch (err) {
    // Dropping permissions cannot conflict; if a driver still refuses, the node stays writable.
    for (const n of changed) n.readOnly = n.common.readOnly = false;
    log.warn({ node: node.name, err: (err as Error).message }, 'could not reopen the old node read-only');
    return Promise.resolve();
  }
  // One after the other, parents first: a format may still write its file while it switches (a qcow2 image is marked clean).
  let previous: Promise<unknown> = Promise.resolve();
  for (const n of changed) {
    previous = previous
      .then(() => n.ctx.channel.request(proto.updateNode, { nodeName: n.name, readOnly: true }))
      .catch((err: Error) => log.error({ node: n.name, err: err.message }, 'read-only switch in the I/O context failed'));
  }
  return previous;
}

/** One external snapshot, in QEMU's prepare / commit / abort / clean steps. */
export class ExternalSnapshot implements TransactionAction {
  private old: BlockNode | undefined;
  private overlay: BlockNode | undefined;
  private backingEdge: BdrvChild | undefined;
  private moved: BdrvChild[] = [];
  /** Whether the overlay took the old node's place (and abort must give it back). */
  private appended = false;
  private readOnlySwitch?: Promise<unknown>;
  /** Whether prepare got far enough for commit to make the old node read-only. */
  private prepared = false;

  constructor(
    private readonly source: Source,
    private readonly completionMode: TransactionContext['completionMode'] = 'individual',
  ) {}

  async prepare(): Promise<void> {
    assertMainLoop();
    if (this.completionMode !== 'individual') {
      throw QmpError.generic(`Action '${this.source.kind}' does not support Transaction property completion-mode = ${this.completionMode}`);
    }
    const old =
      this.source.kind === 'blockdev-snapshot'
        ? lookupNode(this.source.args.node, this.source.args.node)
        : lookupNode(this.source.args.device, this.source.args['node-name']);
    this.old = old;
    await drained([old], async () => {
      checkNotBlocked(old);
      if (!old.readOnly) {
        await old.ctx.channel.request(proto.nodeRequest, { nodeName: old.name, request: { op: 'flush' } }).catch(() => {
          throw QmpError.generic('An IO error has occurred');
        });
      }
      const overlay = this.source.kind === 'blockdev-snapshot' ? lookupNode(this.source.args.overlay, this.source.args.overlay) : await this.openNewOverlay(old, this.source.args);
      this.overlay = overlay;
      checkOverlay(overlay);
      if (this.source.kind === 'blockdev-snapshot-sync' && old.parents.length === 0) {
        // Nothing would use the new overlay: QEMU drops it again at the end of the action; only the old node changes.
        this.overlay = undefined;
        await closeIfUnused(overlay);
      } else {
        if (overlay.ctx !== old.ctx) await moveToContext(overlay, old.ctx, true);
        await this.append(old, overlay);
      }
    });
    this.prepared = true;
  }

  /** QEMU's bdrv_append(): the overlay gets `old` as backing child and takes over its parents. */
  private async append(old: BlockNode, overlay: BlockNode): Promise<void> {
    await drained([old, overlay], async () => {
      const edge = attachChild(overlay, old, 'backing');
      try {
        this.moved = replaceNode(old, overlay, (e) => e === edge || staysAtNode(e));
      } catch (err) {
        detachChild(edge);
        throw err;
      }
      this.backingEdge = edge;
      this.appended = true;
      await syncChildren(overlay);
      await syncParents(this.moved);
      await overlay.ctx.channel.request(proto.replaceBackendRoot, { from: old.name, to: overlay.name });
    });
  }

  /** blockdev-snapshot-sync: checks, creates the image unless mode is existing, opens it without its backing. */
  private async openNewOverlay(old: BlockNode, args: BlockdevSnapshotSyncArgs): Promise<BlockNode> {
    const format = args.format ?? 'qcow2';
    const snapshotName = args['snapshot-node-name'];
    if (args['node-name'] !== undefined && snapshotName === undefined) throw QmpError.generic('New overlay node-name missing');
    if (snapshotName !== undefined && findNode(snapshotName)) throw QmpError.generic('New overlay node-name already in use');
    const file = args['snapshot-file'];
    if ((args.mode ?? 'absolute-paths') !== 'existing') {
      const driver = gsDrivers.get(format);
      if (!driver || driver.descriptor.kind !== 'format') throw QmpError.generic(`Unknown file format '${format}'`);
      if (!driver.supportsBacking) throw QmpError.generic(`Backing file not supported for file format '${format}'`);
      if (!driver.createImageFile) throw QmpError.generic(`Format driver '${format}' does not support image creation`);
      await driver.createImageFile(file, { size: old.length, 'backing-file': nodeFilename(old), 'backing-fmt': old.driver.descriptor.name });
    }
    const options: Record<string, unknown> = { driver: format, file: { driver: 'file', filename: file }, backing: null };
    if (snapshotName !== undefined) options['node-name'] = snapshotName;
    return blockdevAdd(options, false);
  }

  commit(): void {
    assertMainLoop();
    if (this.prepared && this.old) this.readOnlySwitch = reopenReadOnly(this.old);
  }

  /** The command returns once the old node is read-only in its I/O context too (a qcow2 image is clean by then). */
  async clean(): Promise<void> {
    await this.readOnlySwitch;
  }

  async abort(): Promise<void> {
    assertMainLoop();
    const { old, overlay, backingEdge } = this;
    if (!old || !overlay) return;
    if (this.appended && backingEdge) {
      await drained([old, overlay], async () => {
        const back = replaceNode(overlay, old, (e) => e === backingEdge || staysAtNode(e));
        detachChild(backingEdge);
        await syncChildren(overlay);
        await syncParents(back);
        await overlay.ctx.channel.request(proto.replaceBackendRoot, { from: overlay.name, to: old.name });
      });
      this.appended = false;
    }
    if (this.source.kind === 'blockdev-snapshot-sync') await closeIfUnused(overlay);
  }
}

/** The overlay checks of QEMU's external_snapshot_prepare(), in its order. */
function checkOverlay(overlay: BlockNode): void {
  if (overlay.cumulativePerms().perm & PERM.CONSISTENT_READ) throw QmpError.generic('The overlay is already in use');
  if (overlay.driver.descriptor.kind === 'filter') throw QmpError.generic('Filters cannot be used as overlays');
  if (overlay.child('backing')) throw QmpError.generic('The overlay already has a backing image');
  if (!overlay.driver.supportsBacking) throw QmpError.generic('The overlay does not support backing images');
}

/** Runs one snapshot as its own transaction: prepare, then commit, or abort on failure. */
async function runAlone(action: ExternalSnapshot): Promise<void> {
  try {
    await action.prepare();
  } catch (err) {
    await action.abort();
    throw err;
  }
  action.commit();
  await action.clean();
}

export function blockdevSnapshot(args: BlockdevSnapshotArgs): Promise<void> {
  assertMainLoop();
  return runAlone(new ExternalSnapshot({ kind: 'blockdev-snapshot', args }));
}

export function blockdevSnapshotSync(args: BlockdevSnapshotSyncArgs): Promise<void> {
  assertMainLoop();
  return runAlone(new ExternalSnapshot({ kind: 'blockdev-snapshot-sync', args }));
}

registerTransactionAction('blockdev-snapshot', (data: BlockdevSnapshotArgs, ctx) => new ExternalSnapshot({ kind: 'blockdev-snapshot', args: data }, ctx.completionMode));
registerTransactionAction('blockdev-snapshot-sync', (data: BlockdevSnapshotSyncArgs, ctx) => new ExternalSnapshot({ kind: 'blockdev-snapshot-sync', args: data }, ctx.completionMode));
