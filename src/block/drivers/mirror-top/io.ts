/** mirror_top, I/O half: every request goes to the `backing` child (the mirror's source). */
import type { IoDriver } from '../../io/driver-io';
import { blockStatusNode, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from '../../io/request';

export const mirrorTopIo: IoDriver<undefined> = {
  name: 'mirror_top',
  attach: () => undefined,
  read: (node, offset, buf) => readNode(node.child('backing'), offset, buf),
  write: (node, offset, buf, flags) => writeNode(node.child('backing'), offset, buf, flags),
  writeZeroes: (node, offset, bytes, flags) => writeZeroesNode(node.child('backing'), offset, bytes, flags),
  discard: (node, offset, bytes) => discardNode(node.child('backing'), offset, bytes),
  flush: (node) => flushNode(node.child('backing')),
  blockStatus: (node, offset, bytes) => blockStatusNode(node.child('backing'), offset, bytes),
};
