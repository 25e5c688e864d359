/**
 * The I/O side of block-set-write-threshold: every write-like request
 * compares its end with the node's threshold (one comparison when none is
 * set); the first one past it is reported to the main loop, which emits
 * BLOCK_WRITE_THRESHOLD, and the threshold is cleared at once so a burst
 * of writes reports once.
 */
import type { WriteThresholdReport } from '../common/write-threshold';
import type { IoNode } from './io-node';

type Reporter = (node: IoNode, report: WriteThresholdReport) => void;
let reporter: Reporter | undefined;

/** Installed by the context's entry point, which owns the channel to the main loop. */
export function setWriteThresholdReporter(r: Reporter): void {
  reporter = r;
}

export function checkWriteThreshold(node: IoNode, offset: number, bytes: number): void {
  const threshold = node.writeThreshold;
  if (threshold > 0 && offset + bytes > threshold) {
    node.writeThreshold = 0;
    reporter?.(node, { threshold, end: offset + bytes });
  }
}
