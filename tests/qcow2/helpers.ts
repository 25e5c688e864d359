/**
 * What the qcow2 tests share: the block layer loaded from the build in dist/
 * (worker threads run built files), request helpers, qemu-img wrappers and a
 * replayable pseudo-random generator.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export * from '../helpers/in-process-block';
import { findNode, proto, type Req } from '../helpers/in-process-block';

/** The CreateContext blockdev-create hands a driver, built directly for tests. */
export function createContext() {
  return {
    node: (name: string) => findNode(name),
    request: (node: { name: string; ctx: { channel: { request: Function } } }, r: Req) => node.ctx.channel.request(proto.nodeRequest, { nodeName: node.name, request: r }),
    cancelled: false,
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
