/**
 * block_resize: takes the resize permission for the time of the request
 * (so a user that does not share it refuses, as in QEMU), truncates through
 * the node's I/O context, and refreshes the lengths the GS side shows.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import { PERM, PERM_ALL } from '../common/permissions';
import type { BackendParent, BlockNode } from './block-node';
import { resizeBitmaps } from './dirty-bitmaps';
import { drained } from './drain';
import { attachChild, detachChild, findNode } from './graph';

/** The nodes under `node`, which a resize may have grown (a format's file). */
function descendants(node: BlockNode, into = new Set<BlockNode>()): Set<BlockNode> {
  for (const c of node.children) {
    if (!into.has(c.child)) {
      into.add(c.child);
      descendants(c.child, into);
    }
  }
  return into;
}

export async function blockResize(device: string | undefined, nodeName: string | undefined, size: number): Promise<void> {
  assertMainLoop();
  // qbd has no BlockBackends with device names: only node names are found.
  const node = device === undefined && nodeName !== undefined ? findNode(nodeName) : undefined;
  if (!node) throw QmpError.generic(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  if (size < 0) throw QmpError.generic(`Parameter 'size' expects a >0 size`);
  const user: BackendParent = { kind: 'backend', name: '', graphType: 'block-backend' };
  const edge = await drained([node], () => attachChild(user, node, 'root', { perm: PERM.RESIZE, shared: PERM_ALL }));
  try {
    if (node.readOnly) throw QmpError.generic('Image is read-only');
    await resizeNode(node, size, false, 'off');
  } finally {
    await drained([node], () => detachChild(edge));
  }
}

/**
 * Truncates or grows `node` through its I/O context and refreshes the
 * lengths the GS side shows, its own and its children's, and the sizes of
 * their dirty bitmaps. The caller holds the resize permission on the node.
 */
export async function resizeNode(node: BlockNode, size: number, exact: boolean, preallocation: string): Promise<number> {
  assertMainLoop();
  const { length } = await node.ctx.channel.request(proto.nodeRequest, {
    nodeName: node.name,
    request: { op: 'truncate', length: size, exact, preallocation },
  });
  node.length = length ?? size;
  for (const d of descendants(node)) {
    const current = d.driver.currentLength?.(d);
    if (current !== undefined) d.length = current;
  }
  for (const n of [node, ...descendants(node)]) await resizeBitmaps(n);
  return node.length;
}
