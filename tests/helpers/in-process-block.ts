/**
 * The block layer in the test process, loaded from the build in dist/
 * (worker threads run built files), with request helpers over the same
 * messages GS code uses, and a replayable pseudo-random generator.
 */
import * as path from 'node:path';

export const dist = path.resolve(__dirname, '..', '..', 'dist', 'src');
/* eslint-disable @typescript-eslint/no-require-imports */
export const { blockdevAdd, blockdevDel, closeAllNodes } = require(`${dist}/block/global-state/blockdev.js`);
export const { findNode } = require(`${dist}/block/global-state/graph.js`);
export const { getDefaultContext, stopAllContexts } = require(`${dist}/block/global-state/io-contexts.js`);
export const { queryNamedBlockNodes } = require(`${dist}/block/global-state/node-info.js`);
export const { addEventSink, removeEventSink } = require(`${dist}/qmp/events.js`);
export const { gsDrivers } = require(`${dist}/block/global-state/driver-table.js`);
export const proto = require(`${dist}/block/common/io-context-protocol.js`);

export type Req = Record<string, unknown> & { op: string };
export interface Result {
  data?: Uint8Array;
  status?: { status: number; bytes: number; map?: number; depth?: number };
  length?: number;
}

export function request(nodeName: string, req: Req): Promise<Result> {
  const node = findNode(nodeName);
  return node.ctx.channel.request(proto.nodeRequest, { nodeName, request: req });
}

export async function read(node: string, offset: number, bytes: number): Promise<Buffer> {
  const { data } = await request(node, { op: 'read', offset, bytes });
  return Buffer.from(data!);
}

export function write(node: string, offset: number, data: Buffer, flags = {}): Promise<Result> {
  return request(node, { op: 'write', offset, data, flags });
}

export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
