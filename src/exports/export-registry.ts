/**
 * Block exports, GS half: block-export-add/-del, query-block-exports and
 * their deprecated nbd-server-add/-remove forms. An export is a user of its
 * node (a BackendParent on the edge 'root', with the permissions the
 * reference takes), added and removed inside drained sections; its data
 * path lives in the node's I/O context.
 */
import { ExportBitmaps } from './export-bitmaps';
import { assertMainLoop } from '../common/thread-context';
import { log } from '../common/log';
import { QmpError } from '../qmp/errors';
import { emitEvent } from '../qmp/events';
import type { BackendParent, BdrvChild, BlockNode } from '../block/global-state/block-node';
import { closeIfUnused } from '../block/global-state/blockdev';
import { drained } from '../block/global-state/drain';
import { attachChild, detachChild, requireNode } from '../block/global-state/graph';
import type { IoContext } from '../block/global-state/io-context';
import { findIothreadContext } from '../block/global-state/io-contexts';
import { moveToContext } from '../block/global-state/iothread-move';
import { PERM } from '../block/common/permissions';
import * as msg from './nbd/messages';
import { MAX_STRING } from './nbd/protocol';
import { nbdServerContext, nbdServerMaxConnections, nbdServerRunning, nbdServerStopListening, setHandoffRouter } from './nbd/server-gs';

export interface BlockExportOptions {
  type: 'nbd';
  id: string;
  'node-name': string;
  'fixed-iothread'?: boolean;
  iothread?: string;
  writable?: boolean;
  writethrough?: boolean;
  name?: string;
  description?: string;
  bitmaps?: Array<string | { node: string; name: string }>;
  'allocation-depth'?: boolean;
}

let nextSerial = 1;

class BlockExport implements BackendParent {
  readonly kind = 'backend';
  // The reference shows an export's BlockBackend, unnamed, in x-debug-query-block-graph.
  readonly name = '';
  readonly graphType = 'block-backend';
  readonly serial = nextSerial++;
  edge: BdrvChild | undefined;
  shuttingDown = false;
  /** The dirty bitmaps it offers, busy until it goes. */
  bitmaps: ExportBitmaps | undefined;
  constructor(
    readonly id: string,
    private readonly openedOn: BlockNode,
    readonly entry: msg.NbdExportEntry,
  ) {}

  /** The node served: the edge's child, which an overlay may have replaced since. */
  get node(): BlockNode {
    return this.edge?.child ?? this.openedOn;
  }

  /** The contexts that must know the export: where it negotiates and where it is served. */
  contexts(): IoContext[] {
    const out = new Set<IoContext>([this.node.ctx]);
    const server = nbdServerContext();
    if (server) out.add(server);
    return [...out];
  }
}

/** Oldest first. */
const registry: BlockExport[] = [];

setHandoffRouter((state) => registry.find((e) => e.entry.name === state.exportName && !e.shuttingDown)?.node.ctx);

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
  const node = requireNode(opts['node-name']);
  if (opts.iothread !== undefined) await placeInIothread(node, opts.iothread, opts['fixed-iothread'] === true);
  const writable = opts.writable === true;

  if (writable && node.readOnly) throw QmpError.generic('Cannot export read-only node as writable');

  if (!nbdServerRunning()) throw QmpError.generic('NBD server not running');
  const name = opts.name ?? node.name;
  if (Buffer.byteLength(name) > MAX_STRING) throw QmpError.generic(`export name '${name}' too long`);
  const description = opts.description ?? '';
  if (Buffer.byteLength(description) > MAX_STRING) throw QmpError.generic(`description '${description}' too long`);
  if (registry.some((e) => e.entry.name === name && !e.shuttingDown)) throw QmpError.generic(`NBD server already has export named '${name}'`);
  const bitmaps = ExportBitmaps.resolve(node, opts.bitmaps ?? [], writable);

  const entry: msg.NbdExportEntry = {
    id: opts.id,
    name,
    description,
    nodeName: node.name,
    home: node.ctx.name,
    writable,
    writethrough: opts.writethrough === true,
    allocationDepth: opts['allocation-depth'] === true,
    multiConn: nbdServerMaxConnections() !== 1,
    size: node.length,
    minBlock: node.requestAlignment,
    maxTransfer: node.maxTransfer,
    bitmaps: bitmaps.entries,
  };
  const exp = new BlockExport(opts.id, node, entry);
  exp.bitmaps = bitmaps;
  const perm = PERM.CONSISTENT_READ | (writable ? PERM.WRITE : 0);
  const shared = PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED;
  await drained([node], () => {
    exp.edge = attachChild(exp, node, 'root', { perm, shared });
  });
  try {
    for (const ctx of exp.contexts()) await ctx.channel.request(msg.nbdExportAdd, entry);
  } catch (err) {
    await releaseNode(exp);
    throw err;
  }
  bitmaps.hold();
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

/** Forgets the export everywhere, drops its clients, lets go of the node, and announces it. */
async function removeExport(exp: BlockExport): Promise<void> {
  exp.shuttingDown = true;
  for (const ctx of exp.contexts()) {
    await ctx.channel.request(msg.nbdExportRemove, { name: exp.entry.name }).catch((err: Error) => log.error({ export: exp.id, err: err.message }, 'export removal failed'));
  }
  await releaseNode(exp);
  exp.bitmaps?.release();
  const i = registry.indexOf(exp);
  if (i >= 0) registry.splice(i, 1);
  emitEvent('BLOCK_EXPORT_DELETED', { id: exp.id });
}

async function clientsOf(exp: BlockExport): Promise<number> {
  return exp.node.ctx.channel.request(msg.nbdExportClients, { name: exp.entry.name }).catch(() => 0);
}

export async function blockExportDel(id: string, mode: 'safe' | 'hard' = 'safe'): Promise<void> {
  assertMainLoop();
  const exp = findExport(id);
  if (!exp) throw QmpError.generic(`Export '${id}' is not found`);
  if (exp.shuttingDown) throw QmpError.generic(`Export '${id}' is already shutting down`);
  const clients = await clientsOf(exp);
  if (mode === 'safe' && clients > 0) throw QmpError.generic(`export '${id}' still in use`);
  if (clients > 0) {
    // As in the reference, the command returns at once and the event follows once the clients are gone.
    exp.shuttingDown = true;
    setImmediate(() => void removeExport(exp).catch((err: Error) => log.error({ export: id, err: err.message }, 'export removal failed')));
    return;
  }
  await removeExport(exp);
}

/** nbd-server-add: block-export-add with the old argument names; a read-only node is quietly exported read-only. */
export async function nbdServerAdd(args: { device: string; name?: string; description?: string; writable?: boolean; bitmap?: string }): Promise<void> {
  assertMainLoop();
  const name = args.name ?? args.device;
  let writable = args.writable;
  try {
    if (requireNode(args.device).readOnly) writable = false;
  } catch {
    // blockExportAdd reports the missing node.
  }
  const opts: BlockExportOptions = { type: 'nbd', id: name, 'node-name': args.device, name };
  if (writable !== undefined) opts.writable = writable;
  if (args.description !== undefined) opts.description = args.description;
  if (args.bitmap !== undefined) opts.bitmaps = [args.bitmap];
  await blockExportAdd(opts);
}

export function queryBlockExports(): Array<Record<string, unknown>> {
  assertMainLoop();
  return [...registry].reverse().map((e) => ({ id: e.id, type: 'nbd', 'node-name': e.node.name, 'shutting-down': e.shuttingDown }));
}

/** nbd-server-stop: every NBD export goes (oldest first), then the listener. */
export async function nbdServerStop(): Promise<void> {
  assertMainLoop();
  if (!nbdServerRunning()) throw QmpError.generic('NBD server not running');
  for (const exp of [...registry]) if (!exp.shuttingDown) await removeExport(exp);
  await nbdServerStopListening();
}

/** At quit: exports let go of their nodes so that every node can be flushed and closed. */
export async function shutdownExports(): Promise<void> {
  assertMainLoop();
  for (const exp of [...registry]) await removeExport(exp).catch(() => undefined);
  await nbdServerStopListening();
}
