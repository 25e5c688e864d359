/**
 * What queries show about nodes: query-named-block-nodes entries
 * (BlockDeviceInfo) and x-debug-query-block-graph, shaped like QEMU's.
 */
import { assertMainLoop } from '../../common/thread-context';
import { toQmpJson } from '../../qmp/qmp-json';
import { permList } from '../common/permissions';
import type { BlockNode, GraphParent } from './block-node';
import { allNodes } from './graph';

/**
 * The file name of a node, as QEMU's bdrv_refresh_filename() makes it: a
 * node's own (a path), the child's when the node only passes it through,
 * otherwise `json:{…}` of the options that define the content.
 */
export function nodeFilename(node: BlockNode): string {
  assertMainLoop();
  const own = node.driver.plainFilename?.(node);
  if (own !== undefined) return own;
  const file = node.child('file');
  const hasStrong = node.driver.strongOptions.some((k) => node.options[k] !== undefined);
  if (file && node.children.length === 1 && !hasStrong) {
    // Only a plain file name passes through; a child described by options makes the parent's json: too.
    const inner = nodeFilename(file);
    if (!inner.startsWith('json:')) return inner;
  }
  return `json:${toQmpJson(fullOptions(node))}`;
}

/** The options that define a node's content, children inlined. */
function fullOptions(node: BlockNode): Record<string, unknown> {
  const out: Record<string, unknown> = { driver: node.driver.descriptor.name };
  for (const k of node.driver.strongOptions) {
    if (node.options[k] !== undefined) out[k] = node.options[k];
  }
  for (const edge of node.children) {
    const plain = edge.child.driver.plainFilename?.(edge.child);
    out[edge.role] = plain !== undefined ? { driver: edge.child.driver.descriptor.name, filename: plain } : fullOptions(edge.child);
  }
  return out;
}

/** Whether QEMU's bdrv_get_info() succeeds on the node, which decides whether `dirty-flag` is shown. */
function hasDriverInfo(node: BlockNode): boolean {
  if (node.driver.descriptor.kind === 'protocol') return node.driver.plainFilename !== undefined;
  const file = node.child('file');
  return file !== undefined && hasDriverInfo(file);
}

export function blockDeviceInfo(node: BlockNode): Record<string, unknown> {
  assertMainLoop();
  const filename = nodeFilename(node);
  const image: Record<string, unknown> = {
    filename,
    format: node.driver.descriptor.name,
    'virtual-size': node.length,
    'actual-size': node.driver.allocatedSize?.(node) ?? allocatedOfChildren(node),
  };
  if (hasDriverInfo(node)) image['dirty-flag'] = false;
  return {
    file: filename,
    'node-name': node.name,
    ro: node.readOnly,
    drv: node.driver.descriptor.name,
    backing_file_depth: 0,
    encrypted: false,
    detect_zeroes: node.common.detectZeroes,
    bps: 0,
    bps_rd: 0,
    bps_wr: 0,
    iops: 0,
    iops_rd: 0,
    iops_wr: 0,
    image,
    cache: { writeback: true, direct: node.common.cacheDirect, 'no-flush': node.common.cacheNoFlush },
    write_threshold: node.writeThreshold,
  };
}

function allocatedOfChildren(node: BlockNode): number {
  const file = node.child('file');
  return file ? (file.driver.allocatedSize?.(file) ?? allocatedOfChildren(file)) : 0;
}

/** query-named-block-nodes: newest node first, as QEMU lists them. */
export function queryNamedBlockNodes(): Record<string, unknown>[] {
  assertMainLoop();
  return allNodes()
    .reverse()
    .map(blockDeviceInfo);
}

/** x-debug-query-block-graph: ids in creation order, lists newest first. */
export function debugBlockGraph(): { nodes: unknown[]; edges: unknown[] } {
  assertMainLoop();
  const ids = new Map<GraphParent, number>();
  const nodes: unknown[] = [];
  const edges: unknown[] = [];
  const idOf = (p: GraphParent): number => {
    let id = ids.get(p);
    if (id === undefined) {
      id = ids.size + 1;
      ids.set(p, id);
      nodes.unshift({ id, type: p.kind === 'node' ? 'block-driver' : p.graphType, name: p.name });
    }
    return id;
  };
  const all = allNodes();
  for (const n of all) for (const e of n.parents) if (e.parent.kind !== 'node') idOf(e.parent);
  for (const n of all) idOf(n);
  for (const n of all) {
    for (const e of n.parents) {
      edges.unshift({ parent: idOf(e.parent), child: idOf(n), name: e.role, perm: permList(e.perm), 'shared-perm': permList(e.shared) });
    }
  }
  return { nodes, edges };
}
