/** copy-before-write, I/O half: requests pass to `file`; the copying is the backup job's write notifier on `file`. */
import type { IoDriver } from '../../io/driver-io';
import { blockStatusNode, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from '../../io/request';

export const copyBeforeWriteIo: IoDriver<undefined> = {
  name: 'copy-before-write',
  attach: () => undefined,
  read: (node, offset, buf) => readNode(node.child('file'), offset, buf),
  write: (node, offset, buf, flags) => writeNode(node.child('file'), offset, buf, flags),
  writeZeroes: (node, offset, bytes, flags) => writeZeroesNode(node.child('file'), offset, bytes, flags),
  discard: (node, offset, bytes) => discardNode(node.child('file'), offset, bytes),
  flush: (node) => flushNode(node.child('file')),
  blockStatus: (node, offset, bytes) => blockStatusNode(node.child('file'), offset, bytes),
};
