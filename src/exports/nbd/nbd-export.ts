/**
 * The NBD export type, GS half: its options checked as QEMU's
 * nbd_export_create() checks them, the entry every NBD context is told
 * about, and the deprecated nbd-server-add form. Exports are known by their
 * NBD name to the negotiating context and to the context of their node.
 */
import { assertMainLoop } from '../../common/thread-context';
import { log } from '../../common/log';
import { QmpError } from '../../qmp/errors';
import type { IoContext } from '../../block/global-state/io-context';
import { PERM } from '../../block/common/permissions';
import { ExportBitmaps, type ExportBitmapRef } from '../export-bitmaps';
import type { BlockExportOptions, ExportDriver, ExportHandle, ExportInstance, ExportPlan } from '../export-driver';
import * as msg from './messages';
import { MAX_STRING } from './protocol';
import { nbdServerContext, nbdServerMaxConnections, nbdServerRunning, setHandoffRouter } from './server-gs';

/** NBD exports by NBD name. */
const served = new Map<string, NbdExport>();

/** One that is shutting down takes no new clients, and its name is free again. */
function liveExport(name: string): NbdExport | undefined {
  const exp = served.get(name);
  return exp && !exp.handle.shuttingDown ? exp : undefined;
}

setHandoffRouter((state) => liveExport(state.exportName)?.handle.node.ctx);

class NbdExport implements ExportInstance {
  constructor(
    readonly handle: ExportHandle,
    readonly entry: msg.NbdExportEntry,
    private readonly bitmaps: ExportBitmaps,
  ) {}

  /** The contexts that know the export: where it negotiates and where it is served. */
  private contexts(): IoContext[] {
    const out = new Set<IoContext>([this.handle.node.ctx]);
    const server = nbdServerContext();
    if (server) out.add(server);
    return [...out];
  }

  async announce(): Promise<void> {
    for (const ctx of this.contexts()) await ctx.channel.request(msg.nbdExportAdd, this.entry);
    this.bitmaps.hold();
    served.set(this.entry.name, this);
  }

  clients(): Promise<number> {
    return this.handle.node.ctx.channel.request(msg.nbdExportClients, { name: this.entry.name }).catch(() => 0);
  }

  async remove(): Promise<void> {
    if (served.get(this.entry.name) === this) served.delete(this.entry.name);
    for (const ctx of this.contexts()) {
      await ctx.channel.request(msg.nbdExportRemove, { name: this.entry.name }).catch((err: Error) => log.error({ export: this.handle.id, err: err.message }, 'export removal failed'));
    }
    this.bitmaps.release();
  }
}

export const nbdExportDriver: ExportDriver = {
  type: 'nbd',
  prepare(opts: BlockExportOptions, handle: ExportHandle): ExportPlan {
    assertMainLoop();
    const node = handle.node;
    const writable = opts.writable === true;
    if (!nbdServerRunning()) throw QmpError.generic('NBD server not running');
    const name = (opts.name as string | undefined) ?? node.name;
    if (Buffer.byteLength(name) > MAX_STRING) throw QmpError.generic(`export name '${name}' too long`);
    const description = (opts.description as string | undefined) ?? '';
    if (Buffer.byteLength(description) > MAX_STRING) throw QmpError.generic(`description '${description}' too long`);
    if (liveExport(name)) throw QmpError.generic(`NBD server already has export named '${name}'`);
    const bitmaps = ExportBitmaps.resolve(node, (opts.bitmaps as ExportBitmapRef[] | undefined) ?? [], writable);
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
    return {
      perm: PERM.CONSISTENT_READ | (writable ? PERM.WRITE : 0),
      // The size an NBD client saw at negotiation must stay true: nobody may resize the node.
      shared: PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED,
      async start() {
        const exp = new NbdExport(handle, entry, bitmaps);
        try {
          await exp.announce();
        } catch (err) {
          await exp.remove();
          throw err;
        }
        return exp;
      },
    };
  },
};

/** nbd-server-add: block-export-add with the old argument names; a read-only node is quietly exported read-only. */
export function nbdServerAddOptions(args: { device: string; name?: string; description?: string; writable?: boolean; bitmap?: string }, deviceReadOnly: boolean | undefined): BlockExportOptions {
  assertMainLoop();
  const name = args.name ?? args.device;
  const writable = deviceReadOnly ? false : args.writable;
  const opts: BlockExportOptions = { type: 'nbd', id: name, 'node-name': args.device, name };
  if (writable !== undefined) opts.writable = writable;
  if (args.description !== undefined) opts.description = args.description;
  if (args.bitmap !== undefined) opts.bitmaps = [args.bitmap];
  return opts;
}
