/**
 * The vhost-user-blk export type, GS half: its options checked as the
 * reference checks them, and the service in the node's I/O context told to
 * listen. The protocol and the data path live there (io/).
 */
import { assertMainLoop } from '../../common/thread-context';
import { log } from '../../common/log';
import { QmpError } from '../../qmp/errors';
import { PERM } from '../../block/common/permissions';
import { fdWatchAvailable } from '../../native/fd-watch';
import { dupFdAvailable } from '../../native/native';
import { vhostUserCallsAvailable } from '../../native/vhost-user';
import type { BlockExportOptions, ExportDriver, ExportHandle, ExportInstance, ExportPlan } from '../export-driver';
import * as msg from './messages';

const MIN_BLOCK_SIZE = 512;
const MAX_BLOCK_SIZE = 2 * 1024 * 1024;

/** QEMU's check of a block size property. */
function checkBlockSize(id: string, value: number): void {
  if (value < MIN_BLOCK_SIZE || value > MAX_BLOCK_SIZE) {
    throw QmpError.generic(`Property ${id}.logical-block-size doesn't take value ${value} (minimum: ${MIN_BLOCK_SIZE}, maximum: ${MAX_BLOCK_SIZE})`);
  }
  if ((value & (value - 1)) !== 0) throw QmpError.generic(`Property ${id}.logical-block-size doesn't take value '${value}', it's not a power of 2`);
}

function socketPath(addr: Record<string, unknown>): string {
  switch (addr.type) {
    case 'unix':
      return addr.path as string;
    case 'fd':
      // Descriptors are never passed to the daemon, so none can be named.
      throw QmpError.generic('only QEMU supports file descriptor passing');
    default:
      throw QmpError.generic("Only socket address types 'unix' and 'fd' are supported");
  }
}

class VhostUserBlkExport implements ExportInstance {
  /** The listener lives in a worker the main loop does not wait for: this keeps the daemon up while it serves. */
  private readonly keepAlive = setInterval(() => undefined, 1 << 30);

  constructor(
    private readonly handle: ExportHandle,
    private readonly entry: msg.VhostUserBlkEntry,
  ) {}

  /** As in the reference, a connected front-end does not hold the export: a safe removal disconnects it. */
  clients(): Promise<number> {
    return Promise.resolve(0);
  }

  async remove(): Promise<void> {
    clearInterval(this.keepAlive);
    await this.handle.node.ctx.channel.request(msg.vhostUserBlkStop, { id: this.entry.id }).catch((err: Error) => log.error({ export: this.entry.id, err: err.message }, 'export removal failed'));
  }
}

export const vhostUserBlkExportDriver: ExportDriver = {
  type: 'vhost-user-blk',
  prepare(opts: BlockExportOptions, handle: ExportHandle): ExportPlan {
    assertMainLoop();
    const node = handle.node;
    const writable = opts.writable === true;
    const logicalBlockSize = (opts['logical-block-size'] as number | undefined) ?? MIN_BLOCK_SIZE;
    checkBlockSize(opts.id, logicalBlockSize);
    const numQueues = (opts['num-queues'] as number | undefined) ?? 1;
    if (numQueues <= 0) throw QmpError.generic('num-queues must be greater than 0');
    const path = socketPath(opts.addr as Record<string, unknown>);
    if (!vhostUserCallsAvailable || !fdWatchAvailable || !dupFdAvailable) throw QmpError.generic('vhost-user-blk exports need the native addon, which is not loaded');
    const entry: msg.VhostUserBlkEntry = { id: opts.id, nodeName: node.name, path, writable, writethrough: opts.writethrough === true, logicalBlockSize, numQueues };
    return {
      perm: PERM.CONSISTENT_READ | (writable ? PERM.WRITE : 0),
      // The guest saw the capacity when it connected: nobody may resize the node under it.
      shared: PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED,
      async start() {
        await node.ctx.channel.request(msg.vhostUserBlkStart, entry).catch((err: Error) => {
          throw QmpError.generic(err.message);
        });
        return new VhostUserBlkExport(handle, entry);
      },
    };
  },
};
