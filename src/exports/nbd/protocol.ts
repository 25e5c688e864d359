/**
 * NBD wire constants (the protocol's `doc/proto.md`): magics, handshake
 * flags, options and their replies, info types, transmission flags,
 * commands, command flags, reply types and error values. Plain data that
 * both worlds may read.
 */

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags the server sends. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

/** Client flags. */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;
export const KNOWN_CLIENT_FLAGS = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types; errors have bit 31 set. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const INFO = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const REPLY_FLAG_DONE = 1 << 0;

export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** Error values on the wire (they are Linux errno numbers, whatever the host). */
export const NBD_ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** base:allocation flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;

export const META_BASE_ALLOCATION = 'base:allocation';
export const META_ALLOCATION_DEPTH = 'qemu:allocation-depth';

/** Largest payload a request may carry, and the largest read served: the conventional 32 MiB. */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Longest option payload accepted during negotiation. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Longest export name or meta context name (the spec's limit on strings). */
export const MAX_STRING = 4096;
/** Size of the zero padding after EXPORT_NAME's reply unless NO_ZEROES. */
export const EXPORT_NAME_PADDING = 124;

/** Maps an I/O error code to the NBD error sent on the wire. */
export function nbdErrorOf(code: string | undefined): number {
  switch (code) {
    case 'EPERM':
    case 'EROFS':
      return NBD_ERR.EPERM;
    case 'ENOMEM':
      return NBD_ERR.ENOMEM;
    case 'EINVAL':
    // QEMU sends errnos it does not list (such as a snapshot's refused EACCES) as EINVAL.
    case 'EACCES':
      return NBD_ERR.EINVAL;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ERR.ENOSPC;
    case 'EOVERFLOW':
      return NBD_ERR.EOVERFLOW;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NBD_ERR.ENOTSUP;
    case 'ESHUTDOWN':
      return NBD_ERR.ESHUTDOWN;
    default:
      return NBD_ERR.EIO;
  }
}
