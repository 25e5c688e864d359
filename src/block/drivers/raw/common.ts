/** State of a raw node: a window [offset, offset + length) of its file child. */
export interface RawState {
  offset: number;
  /** True when `size` was given: the window has a fixed size and cannot be resized. */
  fixedSize: boolean;
}
