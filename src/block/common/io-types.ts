/**
 * Types shared by both worlds for requests on a node. Plain data only: these
 * cross the thread boundary.
 */

/** Flags of a request, as the generic layer hands them to drivers. */
export interface WriteFlags {
  /** Force unit access: the data is on stable storage before the request completes. */
  fua?: boolean;
  /** Write whole clusters compressed where the format can (QEMU's BDRV_REQ_WRITE_COMPRESSED); a job's `compress`. */
  compressed?: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The driver may punch a hole / deallocate instead of writing zeros. */
  mayUnmap?: boolean;
  /** Fail with ENOTSUP rather than fall back to a slow write of zeros. */
  noFallback?: boolean;
}

/** Bits of a block-status answer (QEMU's BDRV_BLOCK_*). */
export const STATUS = {
  DATA: 0x01,
  ZERO: 0x02,
  OFFSET_VALID: 0x04,
  ALLOCATED: 0x10,
  EOF: 0x20,
} as const;

export interface BlockStatus {
  /** STATUS bits. */
  status: number;
  /** Bytes from the start of the query that share this status; > 0. */
  bytes: number;
  /** Where the data lives in `file` when OFFSET_VALID is set. */
  map?: number;
  /** Name of the node that holds the data when OFFSET_VALID is set. */
  file?: string;
  /** Chain depth where the data was found (1 = this node), for qemu:allocation-depth. */
  depth?: number;
}

/** An I/O error with an errno-style code that survives crossing threads. */
export class IoError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
