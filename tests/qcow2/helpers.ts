/**
 * What the qcow2 tests share: the block layer loaded from the build in dist/
 * (worker threads run built files), request helpers, qemu-img wrappers and a
 * replayable pseudo-random generator.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const dist = path.resolve(__dirname, '..', '..', 'dist', 'src');
/* eslint-disable @typescript-eslint/no-require-imports */
export const { blockdevAdd, blockdevDel, closeAllNodes } = require(`${dist}/block/global-state/blockdev.js`);
export const { findNode } = require(`${dist}/block/global-state/graph.js`);
export const { getDefaultContext, stopAllContexts } = require(`${dist}/block/global-state/io-contexts.js`);
export const { queryNamedBlockNodes } = require(`${dist}/block/global-state/node-info.js`);
export const { addEventSink, removeEventSink } = require(`${dist}/qmp/events.js`);
export const { gsDrivers } = require(`${dist}/block/global-state/driver-table.js`);
const proto = require(`${dist}/block/common/io-context-protocol.js`);

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

/** The CreateContext blockdev-create hands a driver, built directly for tests. */
export function createContext() {
  return {
    node: (name: string) => findNode(name),
    request: (node: { name: string; ctx: { channel: { request: Function } } }, r: Req) => node.ctx.channel.request(proto.nodeRequest, { nodeName: node.name, request: r }),
    cancelled: false,
  };
}

export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function qemuIo(file: string, ...cmds: string[]): string {
  const args = ['-f', 'qcow2'];
  for (const c of cmds) args.push('-c', c);
  return execFileSync('qemu-io', [...args, file], { encoding: 'utf8' });
}

/** `qemu-img check --output=json`: exit status and the parsed report. */
export function check(file: string): { status: number; report: Record<string, unknown>; text: string } {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
  let report: Record<string, unknown> = {};
  try {
    report = JSON.parse(r.stdout);
  } catch {
    // A check that could not run prints no JSON; the status says so.
  }
  return { status: r.status ?? -1, report, text: r.stdout + r.stderr };
}

/** Asserts `qemu-img check` finds no errors and no leaks. */
export function expectClean(file: string): void {
  const c = check(file);
  if (c.status !== 0) throw new Error(`qemu-img check ${file} exited ${c.status}:\n${c.text}`);
}

/** Asserts the qcow2 image holds the same guest data as the raw model file. */
export function expectSameAs(file: string, model: string): void {
  const r = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', file, model], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-img compare: ${r.stdout}${r.stderr}`);
}

export function writeModel(file: string, model: Buffer): void {
  fs.writeFileSync(file, model);
}

/** The guest data of an image as qemu-img sees it. */
export function rawOf(file: string, dir: string): Buffer {
  const out = path.join(dir, `raw-${path.basename(file)}-${process.hrtime.bigint()}.raw`);
  qemuImg('convert', '-O', 'raw', file, out);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}
