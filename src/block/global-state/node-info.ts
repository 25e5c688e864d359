/**
 * What queries show about nodes: query-named-block-nodes entries
 * (BlockDeviceInfo) and x-debug-query-block-graph, shaped like QEMU's.
 */
import * as path from 'node:path';
import { assertMainLoop } from '../../common/thread-context';
import { toQmpJson } from '../../qmp/qmp-json';
import { permList } from '../common/permissions';
import type { BackendParent, BdrvChild, BlockNode, GraphParent } from './block-node';
import { dirtyBitmapInfo } from './dirty-bitmaps';
import { allNodes } from './graph';
import { nextInChain } from './backing-file';

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
  // A backing node that is the one the image records does not change what the node's name is.
  const defining = node.children.filter((c) => !(c.role === 'backing' && !backingOverridden(node, c.child)));
  // Opened or reopened with `backing: null` over an image that records one: that choice is part of the name.
  const backingDropped = !node.child('backing') && node.driver.imageInfo?.(node)?.backingFilename !== undefined;
  if (backingDropped) return `json:${toQmpJson({ backing: null, ...fullOptions(node) })}`;
  if (file && defining.length === 1 && !hasStrong) {
    // Only a plain file name passes through; a child described by options makes the parent's json: too.
    const inner = nodeFilename(file);
    if (!inner.startsWith('json:')) return inner;
  }
  return `json:${toQmpJson(fullOptions(node))}`;
}

/**
 * Whether the backing node differs from the one the image records (QEMU's
 * bdrv_backing_overridden): the recorded name, resolved against the
 * image's directory, against the backing node's file name.
 */
function backingOverridden(node: BlockNode, backing: BlockNode): boolean {
  const recorded = node.driver.imageInfo?.(node)?.backingFilename;
  return recorded === undefined || resolveRecorded(node, recorded) !== nodeFilename(backing);
}

/** A backing file name as the image records it, made absolute against the image's directory. */
function resolveRecorded(node: BlockNode, recorded: string): string | undefined {
  if (path.isAbsolute(recorded) || /^[a-z+]+:/.test(recorded)) return recorded;
  const file = node.child('file');
  // Relative to an image with no directory of its own (over NBD, say): QEMU cannot tell either.
  const own = file && file.driver.plainFilename?.(file);
  return own === undefined ? undefined : path.join(path.dirname(own), recorded);
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

/** The node whose driver answers QEMU's bdrv_get_info() for `node`: a filter passes the question to the node it filters. */
function driverInfoNode(node: BlockNode): BlockNode {
  if (node.driver.descriptor.kind !== 'filter') return node;
  const filtered = nextInChain(node);
  return filtered ? driverInfoNode(filtered) : node;
}

/** Whether QEMU's bdrv_get_info() succeeds on the node, which decides whether `dirty-flag` is shown. */
function hasDriverInfo(node: BlockNode): boolean {
  if (node.driver.hasDriverInfo !== undefined) return node.driver.hasDriverInfo;
  if (node.driver.descriptor.kind === 'protocol') return false;
  const file = node.child('file');
  return file !== undefined && hasDriverInfo(file);
}

/** ImageInfo of a node, with the chain below it (filtered and backing nodes) inlined as `backing-image` unless `flat`. */
function imageInfo(node: BlockNode, flat: boolean): Record<string, unknown> {
  const facts = node.driver.imageInfo?.(node);
  const image: Record<string, unknown> = {
    filename: nodeFilename(node),
    format: node.driver.descriptor.name,
    'virtual-size': node.length,
  };
  // A driver that cannot tell (QEMU's -ENOTSUP, e.g. nbd) shows no actual-size at all.
  const actual = node.driver.allocatedSize ? node.driver.allocatedSize(node) : allocatedOfChildren(node);
  if (actual !== undefined) image['actual-size'] = actual;
  const infoNode = driverInfoNode(node);
  const info = infoNode === node ? facts : infoNode.driver.imageInfo?.(infoNode);
  if (info?.clusterSize !== undefined) image['cluster-size'] = info.clusterSize;
  if (hasDriverInfo(infoNode)) image['dirty-flag'] = info?.dirtyFlag ?? false;
  const specific = node.driver.formatSpecific?.(node);
  if (specific) image['format-specific'] = specific;
  // ImageInfo shows only the name the image records; an overlay given its backing node at run time has none.
  const backingName = facts?.backingFilename;
  if (backingName !== undefined) {
    image['backing-filename'] = backingName;
    // The recorded name made absolute, whichever node is attached now, if any.
    const full = resolveRecorded(node, backingName);
    if (full !== undefined) image['full-backing-filename'] = full;
    if (facts?.backingFormat !== undefined) image['backing-filename-format'] = facts.backingFormat;
  }
  if (facts?.snapshots?.length) image.snapshots = facts.snapshots;
  const below = nextInChain(node);
  if (below && !flat) image['backing-image'] = imageInfo(below, false);
  return image;
}

/**
 * The backing file name BlockDeviceInfo shows: the attached backing node's;
 * none without one (`backing: null`), whatever the image records. Filters
 * (mirror_top, commit_top…) show none, even above a backing child.
 */
function backingFileName(node: BlockNode): string | undefined {
  if (node.driver.descriptor.kind === 'filter') return undefined;
  const backing = node.child('backing');
  return backing ? nodeFilename(backing) : undefined;
}

function backingDepth(node: BlockNode): number {
  const below = nextInChain(node);
  return below ? 1 + backingDepth(below) : 0;
}

/** BlockDeviceInfo; `flat` leaves out the backing chain (no `backing-image`, depth 0), as QEMU does. */
export function blockDeviceInfo(node: BlockNode, flat = false): Record<string, unknown> {
  assertMainLoop();
  const image = imageInfo(node, flat);
  const filename = image.filename as string;
  const backingName = backingFileName(node);
  const bitmaps = dirtyBitmapInfo(node);
  return {
    file: filename,
    'node-name': node.name,
    ro: node.readOnly,
    drv: node.driver.descriptor.name,
    ...(backingName !== undefined ? { backing_file: backingName } : {}),
    backing_file_depth: flat ? 0 : backingDepth(node),
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
    'dirty-bitmaps': bitmaps.length > 0 ? bitmaps : undefined,
  };
}

function allocatedOfChildren(node: BlockNode): number | undefined {
  const file = node.child('file');
  if (!file) return 0;
  return file.driver.allocatedSize ? file.driver.allocatedSize(file) : allocatedOfChildren(file);
}

/** query-named-block-nodes: newest node first, as QEMU lists them. */
export function queryNamedBlockNodes(flat = false): Record<string, unknown>[] {
  assertMainLoop();
  return allNodes()
    .reverse()
    .map((node) => blockDeviceInfo(node, flat));
}

/**
 * x-debug-query-block-graph, numbered as QEMU numbers it: backends in
 * creation order, each followed by its root node, then the other nodes in
 * creation order; lists newest first.
 */
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
    }
    return id;
  };
  const listed = new Set<GraphParent>();
  const list = (p: GraphParent): void => {
    if (listed.has(p)) return;
    listed.add(p);
    nodes.unshift({ id: idOf(p), type: p.kind === 'node' ? 'block-driver' : p.graphType, name: p.name });
  };
  const edge = (e: BdrvChild, parentId: number): void => {
    edges.unshift({ parent: parentId, child: idOf(e.child), name: e.role, perm: permList(e.perm), 'shared-perm': permList(e.shared) });
  };
  const all = allNodes();
  const backendEdges = all.flatMap((n) => n.parents.filter((e) => e.parent.kind !== 'node'));
  backendEdges.sort((a, b) => ((a.parent as BackendParent).serial ?? 0) - ((b.parent as BackendParent).serial ?? 0));
  for (const e of backendEdges) {
    list(e.parent);
    edge(e, idOf(e.parent));
  }
  // QEMU numbers a node when it first meets it: in creation order, or earlier as the child of an older node (newest edge first).
  for (const n of all) {
    idOf(n);
    for (const e of [...n.children].reverse()) idOf(e.child);
  }
  for (const n of all) list(n);
  // Each node's edges to its children, newest first, as QEMU walks them.
  for (const n of all) {
    for (const e of [...n.children].reverse()) edge(e, idOf(n));
  }
  return { nodes, edges };
}
