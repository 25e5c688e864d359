/**
 * query-block and query-blockstats, shaped like QEMU's. The I/O counters of
 * nodes live in their I/O contexts (`block/io/node-stats.ts`); each context
 * is asked for its nodes' counters, and the replies are laid out on the
 * graph as the main loop sees it.
 */
import { assertMainLoop } from '../../common/thread-context';
import * as proto from '../common/io-context-protocol';
import { ACCT_FLUSH, ACCT_READ, ACCT_UNMAP, ACCT_WRITE, type NodeStatsReport } from '../common/node-stats';
import { nextInChain } from './backing-file';
import type { BlockNode } from './block-node';
import { allNodes } from './graph';
import type { IoContext } from './io-context';

/**
 * query-block lists the named BlockBackends (devices and -drive backends).
 * qemu-storage-daemon has neither: the BlockBackends of its exports and
 * jobs are anonymous, and QEMU leaves anonymous ones without a device out.
 * qbd creates only such anonymous backends, so the list is empty, as the
 * reference's is with any graph, exports and jobs included.
 */
export function queryBlock(): unknown[] {
  assertMainLoop();
  return [];
}

/**
 * query-blockstats. Without `query-nodes` QEMU reports the same named
 * BlockBackends as query-block, so the list is empty for the same reason.
 * With it: one BlockStats per node, in creation order, each with its data
 * child's as `parent` (QEMU shows `backing` only for BlockBackends).
 */
export async function queryBlockStats(queryNodes: boolean): Promise<Record<string, unknown>[]> {
  assertMainLoop();
  if (!queryNodes) return [];
  const reports = await gatherReports(allNodes());
  return allNodes().map((node) => blockStats(node, reports));
}

/** Asks each I/O context that holds one of `nodes` for the counters of its nodes. */
async function gatherReports(nodes: BlockNode[]): Promise<Map<string, NodeStatsReport>> {
  const contexts = new Set<IoContext>();
  for (const n of nodes) if (n.attached) contexts.add(n.ctx);
  const replies = await Promise.all([...contexts].map((ctx) => ctx.channel.request(proto.nodeStats, undefined)));
  const out = new Map<string, NodeStatsReport>();
  for (const list of replies) for (const r of list) out.set(r.nodeName, r);
  return out;
}

/**
 * The child QEMU shows as `parent` (bdrv_primary_child, if it holds data):
 * a filter's filtered node, a format's or snapshot-access' file.
 */
function statsParent(node: BlockNode): BlockNode | undefined {
  return node.driver.descriptor.kind === 'filter' ? nextInChain(node) : node.child('file');
}

/** Members in the schema's order: QEMU's output visitor inserts them so, and the QMP writer keeps it within a bucket. */
function blockStats(node: BlockNode, reports: Map<string, NodeStatsReport>): Record<string, unknown> {
  const r = reports.get(node.name);
  const out: Record<string, unknown> = { 'node-name': node.name, stats: deviceStats(r) };
  if (r?.driver) out['driver-specific'] = { driver: node.driver.descriptor.name, ...r.driver };
  const parent = statsParent(node);
  if (parent) out.parent = blockStats(parent, reports);
  return out;
}

/**
 * BlockDeviceStats of a node (zeros for one whose I/O half is not there
 * yet). qbd merges no requests and keeps no latency intervals or
 * histograms; failed and invalid requests count in the idle time and
 * failed ones in the total times, hence account_failed and account_invalid.
 */
function deviceStats(r: NodeStatsReport | undefined): Record<string, unknown> {
  const of = (list: number[] | undefined, kind: number): number => list?.[kind] ?? 0;
  return {
    rd_bytes: of(r?.bytes, ACCT_READ),
    wr_bytes: of(r?.bytes, ACCT_WRITE),
    unmap_bytes: of(r?.bytes, ACCT_UNMAP),
    rd_operations: of(r?.operations, ACCT_READ),
    wr_operations: of(r?.operations, ACCT_WRITE),
    flush_operations: of(r?.operations, ACCT_FLUSH),
    unmap_operations: of(r?.operations, ACCT_UNMAP),
    rd_total_time_ns: of(r?.totalTimeNs, ACCT_READ),
    wr_total_time_ns: of(r?.totalTimeNs, ACCT_WRITE),
    flush_total_time_ns: of(r?.totalTimeNs, ACCT_FLUSH),
    unmap_total_time_ns: of(r?.totalTimeNs, ACCT_UNMAP),
    wr_highest_offset: r?.wrHighestOffset ?? 0,
    rd_merged: 0,
    wr_merged: 0,
    unmap_merged: 0,
    idle_time_ns: r?.idleTimeNs,
    failed_rd_operations: of(r?.failed, ACCT_READ),
    failed_wr_operations: of(r?.failed, ACCT_WRITE),
    failed_flush_operations: of(r?.failed, ACCT_FLUSH),
    failed_unmap_operations: of(r?.failed, ACCT_UNMAP),
    invalid_rd_operations: of(r?.invalid, ACCT_READ),
    invalid_wr_operations: of(r?.invalid, ACCT_WRITE),
    invalid_flush_operations: of(r?.invalid, ACCT_FLUSH),
    invalid_unmap_operations: of(r?.invalid, ACCT_UNMAP),
    account_invalid: true,
    account_failed: true,
    timed_stats: [],
  };
}
