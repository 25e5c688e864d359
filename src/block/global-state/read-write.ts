/**
 * Switching a format node between read-only and read-write while it is in
 * use, as QEMU's bdrv_reopen_set_read_only does for jobs that write into a
 * node opened read-only: commit's base, the overlay whose backing file name
 * a commit or stream rewrites, change-backing-file's image. The node and
 * its protocol child switch together, inside a drained section; the image
 * locks follow the new permissions.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import * as proto from '../common/io-context-protocol';
import type { BlockNode } from './block-node';
import { drained } from './drain';
import { refreshPerms } from './graph';

/** The nodes that switch with `node`: itself and, down `file` edges, its protocol node. */
function layersOf(node: BlockNode): BlockNode[] {
  const out = [node];
  for (let n = node.child('file'); n; n = n.child('file')) out.push(n);
  return out;
}

async function apply(layers: BlockNode[], readOnly: boolean): Promise<void> {
  for (const n of layers) {
    // A protocol node gets a new host handle (its locks move with it); a format keeps its I/O state (loaded tables).
    await n.driver.reopenWritable?.(n, !readOnly);
    n.readOnly = readOnly;
    await n.ctx.channel.request(proto.updateNode, { nodeName: n.name, readOnly });
  }
  // Top down: a format takes write on its file only once it is writable itself.
  refreshPerms(layers[0]!);
}

/** Makes `node` read-only or read-write; returns whether anything changed. */
export async function setNodeReadOnly(node: BlockNode, readOnly: boolean): Promise<boolean> {
  assertMainLoop();
  if (node.readOnly === readOnly) return false;
  const layers = layersOf(node);
  const protocol = layers.find((n) => n.driver.reopenWritable);
  if (!protocol) throw QmpError.generic(`Node '${node.name}' cannot be reopened read-write`);
  // Metadata caches go to disk while the file can still be written.
  if (readOnly) await node.ctx.channel.request(proto.nodeRequest, { nodeName: node.name, request: { op: 'flush' } });
  await drained(layers, async () => {
    try {
      await apply(layers, readOnly);
    } catch (err) {
      // A lock another process holds refused the new permissions: back to how it was.
      await apply(layers, !readOnly).catch(() => undefined);
      throw err;
    }
  });
  return true;
}
