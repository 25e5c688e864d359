/**
 * The I/O table of a filter that passes every request unchanged to one
 * child: mirror_top (to `backing`), copy-before-write (to `file`). What such
 * a filter adds happens elsewhere (a job's write notifier on the child).
 */
import type { IoDriver } from './driver-io';
import { blockStatusNode, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from './request';

export function passThroughIo(name: string, role: 'file' | 'backing'): IoDriver<undefined> {
  return {
    name,
    attach: () => undefined,
    read: (node, offset, buf) => readNode(node.child(role), offset, buf),
    write: (node, offset, buf, flags) => writeNode(node.child(role), offset, buf, flags),
    writeZeroes: (node, offset, bytes, flags) => writeZeroesNode(node.child(role), offset, bytes, flags),
    discard: (node, offset, bytes) => discardNode(node.child(role), offset, bytes),
    flush: (node) => flushNode(node.child(role)),
    blockStatus: (node, offset, bytes) => blockStatusNode(node.child(role), offset, bytes),
  };
}
