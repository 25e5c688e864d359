/**
 * null-co / null-aio, I/O half: a node that stores nothing. The template for
 * a new driver: every callback the generic layer may call, each one line.
 * Reads always return zeros, even with read-zeroes=off (where QEMU leaves
 * the buffer untouched): a buffer may carry other data of this process, and
 * a null node is exported as often as it is benchmarked.
 */
import type { IoDriver } from '../../io/driver-io';
import { STATUS } from '../../common/io-types';
import type { NullState } from './common';

function latency(ns: number): Promise<void> | undefined {
  if (ns <= 0) return undefined;
  return new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.round(ns / 1e6))));
}

export const nullIo: IoDriver<NullState> = {
  name: 'null-co',
  attach: (desc) => desc.state as NullState,
  async read(node, _offset, buf) {
    await latency(node.state.latencyNs);
    buf.fill(0);
  },
  async write(node) {
    await latency(node.state.latencyNs);
  },
  async writeZeroes(node) {
    await latency(node.state.latencyNs);
  },
  async flush(node) {
    await latency(node.state.latencyNs);
  },
  async blockStatus(node, offset, bytes) {
    const zero = node.state.readZeroes ? STATUS.ZERO : 0;
    return { status: STATUS.OFFSET_VALID | STATUS.ALLOCATED | zero, bytes, map: offset, file: node.name, depth: 1 };
  },
};
