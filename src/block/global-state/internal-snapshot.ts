/**
 * Internal snapshots: blockdev-snapshot-internal-sync (as a command and as
 * a `transaction` action) and blockdev-snapshot-delete-internal-sync. The
 * checks and their words are QEMU's (internal_snapshot_prepare and
 * qmp_blockdev_snapshot_delete_internal_sync); the work happens in the I/O
 * half of the node whose format keeps the snapshots, with the node drained.
 * Global state.
 */
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { refuseGroupedCompletion, registerTransactionAction, type TransactionAction, type TransactionContext } from '../../qmp/transaction-actions';
import { type InternalSnapshotInfo, type InternalSnapshotOp, snapshotMatches } from '../common/internal-snapshot';
import * as proto from '../common/io-context-protocol';
import type { BdrvChild, BlockNode } from './block-node';
import { isRootNode } from './backing-file';
import { checkNotBlocked } from './blockdev';
import { drained, drainedBegin, drainedEnd, type DrainToken } from './drain';
import { findNode } from './graph';

export interface SnapshotInternalArgs {
  device: string;
  name: string;
}

export interface SnapshotDeleteInternalArgs {
  device: string;
  id?: string;
  name?: string;
}

const ACTION = 'blockdev-snapshot-internal-sync';

/**
 * QEMU's qmp_get_root_bs(): qbd has no named BlockBackends, so `device` is
 * a node name, and only a node that no other node nor job uses qualifies.
 */
function rootNode(device: string): BlockNode {
  const node = findNode(device);
  if (!node) throw QmpError.generic(`Cannot find device='${device}' nor node-name='${device}'`);
  if (!isRootNode(node)) throw QmpError.generic('Need a root block node');
  return node;
}

/**
 * The node whose format keeps the snapshots of `node` (QEMU's snapshot
 * fallback): the node itself, or, for a driver that keeps none, its only
 * child when that child carries its data (raw's file, a filter's child).
 * Taking a snapshot needs every node on the way writable.
 */
function snapshotHolder(node: BlockNode, forWriting: boolean): BlockNode | undefined {
  for (let n: BlockNode | undefined = node; n; ) {
    if (forWriting && n.readOnly) return undefined;
    if (n.driver.internalSnapshots) return n;
    if (n.children.length !== 1) return undefined;
    const only: BdrvChild = n.children[0]!;
    const primary: boolean = only.role === 'file' || (only.role === 'backing' && n.driver.descriptor.kind === 'filter');
    n = primary ? only.child : undefined;
  }
  return undefined;
}

function snapshotsOf(holder: BlockNode): readonly InternalSnapshotInfo[] {
  return holder.driver.internalSnapshots!(holder);
}

/** Runs `op` in the holder's I/O half and records the result; the caller drained the node. */
async function runOp(holder: BlockNode, op: InternalSnapshotOp): Promise<InternalSnapshotInfo> {
  const result = await holder.ctx.channel.request(proto.internalSnapshot, { nodeName: holder.name, op });
  holder.driver.internalSnapshotsChanged?.(holder, result);
  return result.affected;
}

function errnoOf(err: unknown): string {
  const code = (err as { code?: string }).code;
  return code ? strerror(code) : (err as Error).message;
}

/** The wall clock in microseconds, as QEMU's g_get_real_time(). */
function realTimeMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** One internal snapshot, as a transaction action: prepare takes it, abort deletes it again, clean ends the drained section. */
class InternalSnapshot implements TransactionAction {
  private token?: DrainToken;
  private holder?: BlockNode;
  private created?: InternalSnapshotInfo;

  constructor(
    private readonly args: SnapshotInternalArgs,
    private readonly ctx?: TransactionContext,
  ) {}

  async prepare(): Promise<void> {
    assertMainLoop();
    if (this.ctx) refuseGroupedCompletion(ACTION, this.ctx);
    const node = rootNode(this.args.device);
    // Drained until clean, as QEMU's action: nothing writes between the snapshot and the rest of the transaction.
    this.token = await drainedBegin([node]);
    try {
      await this.take(node);
    } catch (err) {
      // A failed prepare gets no clean from the transaction: the drained section ends here.
      await this.clean();
      throw err;
    }
  }

  private async take(node: BlockNode): Promise<void> {
    const { device, name } = this.args;
    checkNotBlocked(node);
    if (node.readOnly) throw QmpError.generic(`Device '${device}' is read only`);
    const holder = snapshotHolder(node, true);
    if (!holder) throw QmpError.generic(`Block format '${node.driver.descriptor.name}' used by device '${device}' does not support internal snapshots`);
    if (name === '') throw QmpError.generic('Name is empty');
    if (snapshotsOf(holder).some((s) => s.name === name)) throw QmpError.generic(`Snapshot with name '${name}' already exists on device '${device}'`);
    const now = realTimeMicros();
    const op: InternalSnapshotOp = {
      kind: 'create',
      name,
      dateSec: Math.floor(now / 1e6),
      dateNsec: (now % 1e6) * 1000,
      // qemu-storage-daemon runs no guest: its virtual clock is the host's real time.
      vmClockNsec: (BigInt(realTimeMicros()) * 1000n).toString(),
    };
    try {
      this.created = await runOp(holder, op);
    } catch (err) {
      throw QmpError.generic(`Failed to create snapshot '${name}' on device '${device}': ${errnoOf(err)}`);
    }
    this.holder = holder;
  }

  async abort(): Promise<void> {
    assertMainLoop();
    const { holder, created } = this;
    if (!holder || !created) return;
    try {
      await runOp(holder, { kind: 'delete', id: created.id, name: created.name });
    } catch (err) {
      log.error(
        { device: this.args.device, err: (err as Error).message },
        `Failed to delete snapshot with id '${created.id}' and name '${created.name}' on device '${this.args.device}' in abort`,
      );
    }
    this.created = undefined;
  }

  async clean(): Promise<void> {
    if (this.token) await drainedEnd(this.token);
    this.token = undefined;
  }
}

export async function blockdevSnapshotInternalSync(args: SnapshotInternalArgs): Promise<void> {
  assertMainLoop();
  const action = new InternalSnapshot(args);
  try {
    await action.prepare();
  } finally {
    await action.clean();
  }
}

export async function blockdevSnapshotDeleteInternalSync(args: SnapshotDeleteInternalArgs): Promise<InternalSnapshotInfo> {
  assertMainLoop();
  const { device, id, name } = args;
  const node = rootNode(device);
  if (id === undefined && name === undefined) throw QmpError.generic('Name or id must be provided');
  checkNotBlocked(node);
  const holder = snapshotHolder(node, false);
  if (!holder) throw QmpError.generic('Failed to get a snapshot list: Operation not supported');
  const found = snapshotsOf(holder).find((s) => snapshotMatches(s, id, name));
  if (!found) throw QmpError.generic(`Snapshot with id '${id ?? 'null'}' and name '${name ?? 'null'}' does not exist on device '${device}'`);
  try {
    await drained([node], () => runOp(holder, { kind: 'delete', id, name }));
  } catch (err) {
    throw QmpError.generic(`Failed to remove snapshot from snapshot list: ${errnoOf(err)}`);
  }
  return found;
}

registerTransactionAction(ACTION, (data: SnapshotInternalArgs, ctx) => new InternalSnapshot(data, ctx));
