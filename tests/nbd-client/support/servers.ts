/**
 * NBD servers for the client driver's tests: qemu-nbd and nbdkit, on a UNIX
 * socket or a loopback TCP port, started and stopped (or killed) by the test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { waitFor } from '../../helpers/daemons';

export interface NbdServer {
  proc: ChildProcess;
  /** The `server` option of blockdev-add. */
  address: Record<string, unknown>;
  /** An NBD URI for qemu-img / nbdinfo. */
  uri: string;
  stop(): Promise<void>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
}

export type Listen = { socket: string } | { host: string; port: number };

function canConnect(l: Listen): Promise<boolean> {
  return new Promise((resolve) => {
    const s = 'socket' in l ? net.connect({ path: l.socket }) : net.connect({ host: l.host, port: l.port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function waitListening(l: Listen, proc: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(l))) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    if (Date.now() > deadline) throw new Error(`${what} did not start listening`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function ended(proc: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill(signal);
  });
}

function server(proc: ChildProcess, l: Listen, exportName: string): NbdServer {
  const address = 'socket' in l ? { type: 'unix', path: l.socket } : { type: 'inet', host: l.host, port: String(l.port) };
  const uri = 'socket' in l ? `nbd+unix:///${exportName}?socket=${l.socket}` : `nbd://${l.host}:${l.port}/${exportName}`;
  return { proc, address, uri, stop: () => ended(proc, 'SIGTERM'), kill: () => ended(proc, 'SIGKILL') };
}

/** qemu-nbd serving an image (raw unless told), persistent, several clients at once. */
export async function startQemuNbd(image: string, l: Listen, opts: { exportName?: string; readOnly?: boolean; format?: string; extra?: string[] } = {}): Promise<NbdServer> {
  const name = opts.exportName ?? 'exp';
  const where = 'socket' in l ? ['-k', l.socket] : ['-b', l.host, '-p', String(l.port)];
  const proc = spawn('qemu-nbd', ['-f', opts.format ?? 'raw', '-x', name, ...(opts.extra ?? []), '-t', '-e', '8', ...(opts.readOnly ? ['-r'] : []), '--cache=writeback', '--discard=unmap', ...where, image], { stdio: 'ignore' });
  await waitListening(l, proc, 'qemu-nbd');
  return server(proc, l, name);
}

/** nbdkit with a plugin (`memory size=…`, `file file=…`), in the foreground. */
export async function startNbdkit(plugin: string[], l: Listen): Promise<NbdServer> {
  const where = 'socket' in l ? ['-U', l.socket] : ['-i', l.host, '-p', String(l.port)];
  const proc = spawn('nbdkit', ['-f', ...where, ...plugin], { stdio: 'ignore' });
  await waitListening(l, proc, 'nbdkit');
  return server(proc, l, '');
}

/** A free TCP port on `host` (bound and released; good enough on a quiet loopback). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export function sparseFile(file: string, size: number): void {
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, size);
}

export { waitFor };
