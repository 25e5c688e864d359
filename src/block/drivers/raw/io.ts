/** raw, I/O half: passes every request to `file`, shifted by `offset`. */
import type { IoDriver } from '../../io/driver-io';
import { IoError } from '../../common/io-types';
import { blockStatusNode, discardNode, flushNode, readNode, truncateNode, writeNode, writeZeroesNode } from '../../io/request';
import type { RawState } from './common';

export const rawIo: IoDriver<RawState> = {
  name: 'raw',
  attach: (desc) => desc.state as RawState,
  read: (node, offset, buf) => readNode(node.child('file'), node.state.offset + offset, buf),
  write: (node, offset, buf, flags) => writeNode(node.child('file'), node.state.offset + offset, buf, flags),
  writeZeroes: (node, offset, bytes, flags) => writeZeroesNode(node.child('file'), node.state.offset + offset, bytes, flags),
  discard: (node, offset, bytes) => discardNode(node.child('file'), node.state.offset + offset, bytes),
  flush: (node) => flushNode(node.child('file')),
  async blockStatus(node, offset, bytes) {
    const file = node.child('file');
    const avail = Math.min(bytes, file.length - (node.state.offset + offset));
    if (avail <= 0) return { status: 0x02, bytes, depth: 1 };
    const st = await blockStatusNode(file, node.state.offset + offset, avail);
    return { ...st, depth: 1 };
  },
  async truncate(node, length, exact, preallocation) {
    if (node.state.fixedSize) throw new IoError('ENOTSUP', 'Cannot resize fixed-size raw disks');
    // The window follows its file, whose length the file driver rounds to whole sectors.
    return (await truncateNode(node.child('file'), node.state.offset + length, exact, preallocation)) - node.state.offset;
  },
};
