/**
 * Block exports, GS half: block-export-add/-del and query-block-exports for
 * every export type, and nbd-server-stop's removal of the NBD ones. An
 * export is a user of its node (a BackendParent on the edge 'root', with the
 * permissions its type asks for), added and removed inside drained
 * sections; its data path, run by its type's driver, lives in the node's I/O
 * context.
 */
import { assertMainLoop } from '../common/thread-context';
import { log } from '../common/log';
import { QmpError } from '../qmp/errors';
import { emitEvent } from '../qmp/events';
import type { BackendParent, BdrvChild, BlockNode } from '../block/global-state/block-node';
import { closeIfUnused } from '../block/global-state/blockdev';
import { drained } from '../block/global-state/drain';
import { attachChild, detachChild, requireNode } from '../block/global-state/graph';
import { findIothreadContext } from '../block/global-state/io-contexts';
import { moveToContext } from '../block/global-state/iothread-move';
import type { BlockExportOptions, BlockExportType, ExportDriver, ExportHandle, ExportInstance } from './export-driver';
import { fuseExportDriver } from './fuse/fuse-export';
import { nbdExportDriver, nbdServerAddOptions } from './nbd/nbd-export';
import { nbdServerRunning, nbdServerStopListening } from './nbd/server-gs';
import { vhostUserBlkExportDriver } from './vhost-user-blk/vhost-user-blk-export';

export type { BlockExportOptions } from './export-driver';

const drivers = new Map<BlockExportType, ExportDriver>([
  [nbdExportDriver.type, nbdExportDriver],
  [vhostUserBlkExportDriver.type, vhostUserBlkExportDriver],
  [fuseExportDriver.type, fuseExportDriver],
]);

let nextSerial = 1;

class BlockExport implements BackendParent, ExportHandle {
  readonly kind = 'backend';
  // The reference shows an export's BlockBackend, unnamed, in x-debug-query-block-graph.
  readonly name = '';
  readonly graphType = 'block-backend';
  readonly serial = nextSerial++;
  edge: BdrvChild | undefined;
  instance: ExportInstance | undefined;
  shuttingDown = false;
  constructor(
    readonly id: string,
    readonly type: BlockExportType,
    private readonly openedOn: BlockNode,
  ) {}

  get node(): BlockNode {
    return this.edge?.child ?? this.openedOn;
  }
}

/** Oldest first. */
const registry: BlockExport[] = [];

/** QEMU's id_wellformed(). */
function wellFormed(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9._-]*$/.test(id);
}

function findExport(id: string): BlockExport | undefined {
  return registry.find((e) => e.id === id);
}

async function placeInIothread(node: BlockNode, iothread: string, fixed: boolean): Promise<void> {
  const ctx = findIothreadContext(iothread);
  if (!ctx) throw QmpError.generic(`iothread "${iothread}" not found`);
  try {
    await moveToContext(node, ctx, false);
  } catch (err) {
    // Without fixed-iothread the export simply stays where the node is.
    if (fixed) throw err;
  }
}

export async function blockExportAdd(opts: BlockExportOptions): Promise<void> {
  assertMainLoop();
  if (!wellFormed(opts.id)) throw QmpError.generic('Invalid block export id');
  if (findExport(opts.id)) throw QmpError.generic(`Block export id '${opts.id}' is already in use`);
  const driver = drivers.get(opts.type);
  if (!driver) throw QmpError.generic('No driver found for the requested export type');
  const node = requireNode(opts['node-name']);
  if (opts.iothread !== undefined) await placeInIothread(node, opts.iothread, opts['fixed-iothread'] === true);
  if (opts.writable === true && node.readOnly) throw QmpError.generic('Cannot export read-only node as writable');

  const exp = new BlockExport(opts.id, opts.type, node);
  const plan = driver.prepare(opts, exp);
  await drained([node], () => {
    exp.edge = attachChild(exp, node, 'root', { perm: plan.perm, shared: plan.shared });
  });
  try {
    exp.instance = await plan.start();
  } catch (err) {
    await releaseNode(exp);
    throw err;
  }
  registry.push(exp);
}

async function releaseNode(exp: BlockExport): Promise<void> {
  const edge = exp.edge;
  if (!edge) return;
  exp.edge = undefined;
  const node = edge.child;
  await drained([node], () => detachChild(edge));
  // A node the graph opened for itself (a snapshot's overlay) goes with its last user.
  await closeIfUnused(node);
}

/** Stops the data path, lets go of the node, forgets the export, and announces it. */
async function removeExport(exp: BlockExport): Promise<void> {
  exp.shuttingDown = true;
  await exp.instance?.remove().catch((err: Error) => log.error({ export: exp.id, err: err.message }, 'export removal failed'));
  await releaseNode(exp);
  const i = registry.indexOf(exp);
  if (i >= 0) registry.splice(i, 1);
  emitEvent('BLOCK_EXPORT_DELETED', { id: exp.id });
}

export async function blockExportDel(id: string, mode: 'safe' | 'hard' = 'safe'): Promise<void> {
  assertMainLoop();
  const exp = findExport(id);
  if (!exp) throw QmpError.generic(`Export '${id}' is not found`);
  if (exp.shuttingDown) throw QmpError.generic(`Export '${id}' is already shutting down`);
  const clients = (await exp.instance?.clients()) ?? 0;
  if (mode === 'safe' && clients > 0) throw QmpError.generic(`export '${id}' still in use`);
  if (clients > 0) {
    // As in the reference, the command returns at once and the event follows once the clients are gone.
    exp.shuttingDown = true;
    setImmediate(() => void removeExport(exp).catch((err: Error) => log.error({ export: id, err: err.message }, 'export removal failed')));
    return;
  }
  await removeExport(exp);
}

/** nbd-server-add: block-export-add with the old argument names. */
export async function nbdServerAdd(args: { device: string; name?: string; description?: string; writable?: boolean; bitmap?: string }): Promise<void> {
  assertMainLoop();
  await blockExportAdd(nbdServerAddOptions(args, findNodeReadOnly(args.device)));
}

/** Undefined for a missing node: blockExportAdd reports it. */
function findNodeReadOnly(name: string): boolean | undefined {
  try {
    return requireNode(name).readOnly;
  } catch {
    return undefined;
  }
}

export function queryBlockExports(): Array<Record<string, unknown>> {
  assertMainLoop();
  return [...registry].reverse().map((e) => ({ id: e.id, type: e.type, 'node-name': e.node.name, 'shutting-down': e.shuttingDown }));
}

/** nbd-server-stop: every NBD export goes (oldest first), then the listener. */
export async function nbdServerStop(): Promise<void> {
  assertMainLoop();
  if (!nbdServerRunning()) throw QmpError.generic('NBD server not running');
  for (const exp of [...registry]) if (exp.type === 'nbd' && !exp.shuttingDown) await removeExport(exp);
  await nbdServerStopListening();
}

/** At quit: exports let go of their nodes so that every node can be flushed and closed. */
export async function shutdownExports(): Promise<void> {
  assertMainLoop();
  for (const exp of [...registry]) await removeExport(exp).catch(() => undefined);
  await nbdServerStopListening();
}
