/**
 * The vhost-user wire protocol and the virtio-blk device it carries: message
 * codes, flags, feature bits and layouts (QEMU's docs/interop/vhost-user.rst,
 * the virtio 1.1 specification). Plain constants, usable by the back-end and
 * by the front-end the tests play.
 */

/** Every message starts with request (u32), flags (u32) and payload size (u32), little-endian. */
export const HEADER_SIZE = 12;
/** The largest payload accepted: a full memory table is 8 + 8 * 32 bytes, a config space 12 + 256. */
export const MAX_PAYLOAD = 4096;

export const FLAG_VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;

export const REQ = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
} as const;

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const PROTOCOL_F = {
  MQ: 0,
  LOG_SHMFD: 1,
  REPLY_ACK: 3,
  CONFIG: 9,
  CONFIGURE_MEM_SLOTS: 15,
} as const;

/** Device feature bits (GET/SET_FEATURES). */
export const F = {
  BLK_SIZE_MAX: 1,
  BLK_SEG_MAX: 2,
  BLK_RO: 5,
  BLK_BLK_SIZE: 6,
  BLK_FLUSH: 9,
  BLK_TOPOLOGY: 10,
  BLK_CONFIG_WCE: 11,
  BLK_MQ: 12,
  BLK_DISCARD: 13,
  BLK_WRITE_ZEROES: 14,
  NOTIFY_ON_EMPTY: 24,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
} as const;

/** SET_VRING_KICK/CALL/ERR: the low byte is the queue, this bit says no descriptor came. */
export const VRING_NOFD_MASK = 0x100;
export const VRING_INDEX_MASK = 0xff;

/** A memory region description: guest physical address, size, front-end address, offset into the descriptor. */
export const MEM_REGION_SIZE = 32;
/** The most regions SET_MEM_TABLE carries, and the slots this back-end offers. */
export const MAX_MEM_REGIONS = 8;
export const MAX_MEM_SLOTS = 32;

/** Split virtqueue layout. */
export const DESC_SIZE = 16;
export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const USED_F_NO_NOTIFY = 1;
export const AVAIL_F_NO_INTERRUPT = 1;
export const MAX_QUEUE_SIZE = 32768;

/** virtio-blk request types and status bytes. */
export const BLK_T = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  DISCARD: 11,
  WRITE_ZEROES: 13,
} as const;
export const BLK_S_OK = 0;
export const BLK_S_IOERR = 1;
export const BLK_S_UNSUPP = 2;
/** The request header: type (u32), ioprio (u32), sector (u64). */
export const BLK_REQ_HEADER = 16;
/** A discard/write-zeroes segment: sector (u64), sectors (u32), flags (u32). */
export const BLK_SEGMENT_SIZE = 16;
export const BLK_WRITE_ZEROES_F_UNMAP = 1;
export const BLK_ID_BYTES = 20;
export const SECTOR = 512;

/** struct virtio_blk_config offsets. */
export const CONFIG = {
  CAPACITY: 0,
  SIZE_MAX: 8,
  SEG_MAX: 12,
  BLK_SIZE: 20,
  PHYSICAL_BLOCK_EXP: 24,
  ALIGNMENT_OFFSET: 25,
  MIN_IO_SIZE: 26,
  OPT_IO_SIZE: 28,
  WRITEBACK: 32,
  NUM_QUEUES: 34,
  MAX_DISCARD_SECTORS: 36,
  MAX_DISCARD_SEG: 40,
  DISCARD_SECTOR_ALIGNMENT: 44,
  MAX_WRITE_ZEROES_SECTORS: 48,
  MAX_WRITE_ZEROES_SEG: 52,
  WRITE_ZEROES_MAY_UNMAP: 56,
  SIZE: 60,
} as const;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}
