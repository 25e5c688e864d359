/**
 * The messages between the main loop's FUSE exports and the I/O context
 * that serves them. Plain data only: these cross the thread boundary.
 */
import { requestType } from '../../common/channel';

/** What the serving context needs: the mounted session's descriptor and the file's initial attributes. */
export interface FuseExportEntry {
  id: string;
  nodeName: string;
  /** /dev/fuse, opened non-blocking by the main loop and mounted; the main loop closes it once the context has stopped. */
  fd: number;
  writable: boolean;
  growable: boolean;
  allowOther: boolean;
  /** S_IFREG and the permission bits (chmod changes them later). */
  mode: number;
  uid: number;
  gid: number;
}

export const fuseExportAdd = requestType<FuseExportEntry, void>('fuse.export-add');
/** Stops reading requests and waits for those in flight; the main loop then closes the descriptor. */
export const fuseExportRemove = requestType<{ id: string }, void>('fuse.export-remove');
/**
 * From the serving context: truncate or grow the node. The main loop owns
 * the node's length as the graph shows it, so resizing goes through it;
 * answers the new length.
 */
export const fuseResize = requestType<{ id: string; length: number; preallocation: 'off' | 'falloc' }, number>('fuse.resize');
