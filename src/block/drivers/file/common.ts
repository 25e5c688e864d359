/** State of a file or host_device node, shared by its GS and I/O halves. */
export interface FileState {
  fd: number;
  filename: string;
  isBlockDevice: boolean;
  /** Opened with O_DIRECT: buffers and requests must be aligned. */
  direct: boolean;
  /** Memory alignment O_DIRECT needs for buffers. */
  bufferAlignment: number;
  /** Whether the node takes QEMU-compatible image locks (locking=on, or auto with OFD locks available). */
  locking: boolean;
}
