/** State of a null node, shared by its GS and I/O halves. */
export interface NullState {
  readZeroes: boolean;
  latencyNs: number;
}
