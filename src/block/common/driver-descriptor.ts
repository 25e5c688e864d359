/**
 * The immutable facts about a block driver, readable by both worlds. The GS
 * callbacks live in `global-state/driver-gs.ts` tables, the I/O callbacks in
 * `io/driver-io.ts` tables; a worker loads only the latter.
 */
export interface BlockDriverDescriptor {
  /** The QAPI `BlockdevDriver` name. */
  readonly name: string;
  /** protocol: talks to a file or socket; format: interprets a child's bytes; filter: passes through. */
  readonly kind: 'protocol' | 'format' | 'filter';
}
