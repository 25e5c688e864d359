/** What an I/O context reports when a write crosses a node's write threshold. */
export const WRITE_THRESHOLD_EVENT = 'write-threshold';

export interface WriteThresholdReport {
  /** The threshold the write crossed. */
  threshold: number;
  /** End offset of the write. */
  end: number;
}
