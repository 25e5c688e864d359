/**
 * Per-node I/O accounting, kept by the generic request layer: every request
 * that reaches a node (from an export, a job, or the node's parent) is
 * counted on that node. QEMU counts only at the BlockBackend level, where a
 * device model calls block_acct_*; qbd counts the same fields on each node,
 * with QEMU's rules: a failed request counts as failed only, not in
 * operations or bytes, but its time is accounted (account_failed); a
 * refused request counts as invalid and as an access (account_invalid).
 *
 * The counters sit on the hot path: fixed arrays of numbers made once per
 * node, plain increments, one clock read at each end of a request. The
 * clock is perf_hooks' `performance`: the global of the same name is a
 * getter that costs several times the clock read itself.
 */
import { performance } from 'node:perf_hooks';
import { ACCT_KINDS, type AcctKind, type NodeStatsReport } from '../common/node-stats';
import type { IoNode } from './io-node';

export class NodeIoStats {
  readonly bytes = new Float64Array(ACCT_KINDS);
  readonly operations = new Float64Array(ACCT_KINDS);
  readonly failed = new Float64Array(ACCT_KINDS);
  readonly invalid = new Float64Array(ACCT_KINDS);
  readonly totalTimeNs = new Float64Array(ACCT_KINDS);
  wrHighestOffset = 0;
  /** performance.now() of the last request's end; -1 before the first. */
  lastAccess = -1;
  /** Counters the driver keeps (the file driver's discards); carried with the rest. */
  driver: Record<string, number> | undefined = undefined;

  /** Counters reported by a node's former context (it moved here), idle time included. */
  restore(r: NodeStatsReport): void {
    this.bytes.set(r.bytes);
    this.operations.set(r.operations);
    this.failed.set(r.failed);
    this.invalid.set(r.invalid);
    this.totalTimeNs.set(r.totalTimeNs);
    this.wrHighestOffset = r.wrHighestOffset;
    this.lastAccess = r.idleTimeNs === undefined ? -1 : performance.now() - r.idleTimeNs / 1e6;
    this.driver = r.driver ? { ...r.driver } : undefined;
  }

  report(nodeName: string): NodeStatsReport {
    const r: NodeStatsReport = {
      nodeName,
      bytes: [...this.bytes],
      operations: [...this.operations],
      failed: [...this.failed],
      invalid: [...this.invalid],
      totalTimeNs: [...this.totalTimeNs],
      wrHighestOffset: this.wrHighestOffset,
    };
    if (this.lastAccess >= 0) r.idleTimeNs = Math.max(0, Math.round((performance.now() - this.lastAccess) * 1e6));
    return r;
  }
}

/** What query-blockstats shows of a node, the driver's counters included. */
export function nodeStatsReport(node: IoNode): NodeStatsReport {
  const r = node.stats.report(node.name);
  const driver = node.driver.driverStats?.(node);
  if (driver) r.driver = driver;
  return r;
}

/** The clock requests are timed with (milliseconds, sub-microsecond resolution); read once at a request's start. */
export function acctStart(): number {
  return performance.now();
}

export function acctDone(s: NodeIoStats, kind: AcctKind, bytes: number, start: number): void {
  const now = performance.now();
  s.operations[kind]++;
  s.bytes[kind] += bytes;
  s.totalTimeNs[kind] += Math.round((now - start) * 1e6);
  s.lastAccess = now;
}

export function acctFailed(s: NodeIoStats, kind: AcctKind, start: number): void {
  const now = performance.now();
  s.failed[kind]++;
  s.totalTimeNs[kind] += Math.round((now - start) * 1e6);
  s.lastAccess = now;
}

export function acctInvalid(s: NodeIoStats, kind: AcctKind): void {
  s.invalid[kind]++;
  s.lastAccess = performance.now();
}

/** After a write or write-zeroes ended (whatever its result, as QEMU's bdrv_co_write_req_finish does). */
export function acctWriteEnd(s: NodeIoStats, offset: number, bytes: number): void {
  const end = offset + bytes;
  if (end > s.wrHighestOffset) s.wrHighestOffset = end;
}
