/**
 * Per-node I/O accounting as plain data: what an I/O context reports to the
 * main loop for query-blockstats, and what a node carries when it moves to
 * another context. The counting itself is in `block/io/node-stats.ts`.
 */

/** The kinds of request a node counts, as QEMU's BlockAcctType has them; indexes into the counter arrays. */
export const ACCT_READ = 0;
export const ACCT_WRITE = 1;
export const ACCT_FLUSH = 2;
export const ACCT_UNMAP = 3;
export const ACCT_KINDS = 4;

export type AcctKind = typeof ACCT_READ | typeof ACCT_WRITE | typeof ACCT_FLUSH | typeof ACCT_UNMAP;

export interface NodeStatsReport {
  nodeName: string;
  /** Per kind (ACCT_*): bytes of completed requests. */
  bytes: number[];
  /** Per kind: completed requests. */
  operations: number[];
  /** Per kind: requests that failed in the driver. */
  failed: number[];
  /** Per kind: requests refused before they reached the driver (out of range, read-only node). */
  invalid: number[];
  /** Per kind: time spent in completed and failed requests. */
  totalTimeNs: number[];
  /** The end of the furthest write (data or zeroes), successful or not, as in QEMU. */
  wrHighestOffset: number;
  /** Since the node last saw a request; absent while it has seen none. */
  idleTimeNs?: number;
  /** Counters owned by the node's driver (structured-clone data), shown as `driver-specific`. */
  driver?: Record<string, number>;
}
