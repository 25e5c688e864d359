/**
 * snapshot-access, I/O half: reads come from the snapshot of the
 * copy-before-write node below; the view cannot be written, but a discard
 * gives up the clusters it covers, freeing their space in the fleecing
 * target.
 */
import { IoError, STATUS } from '../../common/io-types';
import type { IoDriver } from '../../io/driver-io';
import { checkSnapshotAccess, snapshotDiscard, snapshotRead } from '../copy-before-write/io';

export const snapshotAccessIo: IoDriver<undefined> = {
  name: 'snapshot-access',
  attach: () => undefined,
  read: (node, offset, buf) => snapshotRead(node.child('file'), offset, buf),
  async write() {
    throw new IoError('ENOTSUP', 'snapshot-access cannot be written');
  },
  async writeZeroes() {
    throw new IoError('ENOTSUP', 'snapshot-access cannot be written');
  },
  discard: (node, offset, bytes) => snapshotDiscard(node.child('file'), offset, bytes),
  flush: async () => undefined,
  async blockStatus(node, offset, bytes) {
    checkSnapshotAccess(node.child('file'), offset, bytes);
    return { status: STATUS.DATA | STATUS.ALLOCATED, bytes: Math.min(bytes, node.length - offset) };
  },
};
