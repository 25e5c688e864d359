/**
 * The messages between the vhost-user-blk export's GS half and its service
 * in the node's I/O context. Plain data only: these cross the thread boundary.
 */
import { requestType } from '../../common/channel';

export interface VhostUserBlkEntry {
  id: string;
  nodeName: string;
  /** The UNIX socket the export listens on. */
  path: string;
  writable: boolean;
  writethrough: boolean;
  logicalBlockSize: number;
  numQueues: number;
}

export const vhostUserBlkStart = requestType<VhostUserBlkEntry, void>('vhost-user-blk.start');
/** Stops listening, drops the front-end, and resolves once its requests in flight have finished. */
export const vhostUserBlkStop = requestType<{ id: string }, void>('vhost-user-blk.stop');
