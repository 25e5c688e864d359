/**
 * Starting qbd (bin/qbd, built) or the reference qemu-storage-daemon for a
 * test, each with a private directory, and stopping it afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpTestClient } from './qmp-client';

export const REPO = path.resolve(__dirname, '..', '..');
export const QBD = path.join(REPO, 'bin', 'qbd');

export type Flavour = 'qbd' | 'qsd';

export interface RunningDaemon {
  flavour: Flavour;
  proc: ChildProcess;
  dir: string;
  qmpPath: string;
  /** Written by the daemon once it listens (--pidfile). */
  pidfile: string;
  stderr: () => string;
  connect(): Promise<QmpTestClient>;
  /** Connects and negotiates. */
  client(): Promise<QmpTestClient>;
  stop(): Promise<number | null>;
}

export function tempDir(prefix = 'qbd-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function waitFor(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resource limits a test puts on the daemon. */
export interface DaemonLimits {
  /**
   * RLIMIT_FSIZE in KiB: writes past it fail with EFBIG (SIGXFSZ ignored),
   * a target error that needs no special device.
   */
  fileSizeLimitKiB?: number;
}

/** Starts a daemon with a QMP monitor on `<dir>/qmp.sock` plus `extra` arguments. */
export async function startDaemon(flavour: Flavour, extra: string[] = [], opts: { dir?: string; env?: NodeJS.ProcessEnv } & DaemonLimits = {}): Promise<RunningDaemon> {
  const dir = opts.dir ?? tempDir();
  const qmpPath = path.join(dir, 'qmp.sock');
  // The pidfile is written once every socket listens: the daemon's readiness signal.
  const ready = path.join(dir, `${flavour}-ready.pid`);
  const args = [`--chardev`, `socket,id=qmp0,path=${qmpPath},server=on,wait=off`, `--monitor`, `chardev=qmp0`, '--pidfile', ready, ...extra];
  const argv = flavour === 'qbd' ? [process.execPath, QBD, ...args] : ['qemu-storage-daemon', ...args];
  // An ignored signal stays ignored across exec, so the limit gives EFBIG rather than a kill.
  const limited = opts.fileSizeLimitKiB === undefined ? argv : ['bash', '-c', `trap '' XFSZ; ulimit -f ${opts.fileSizeLimitKiB}; exec "$@"`, 'limit', ...argv];
  const proc = spawn(limited[0]!, limited.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  await waitFor(() => exited || fs.existsSync(ready), 15_000, `${flavour} start-up`);
  if (exited) throw new Error(`${flavour} exited at start-up: ${err}`);
  const d: RunningDaemon = {
    flavour,
    proc,
    dir,
    qmpPath,
    pidfile: ready,
    stderr: () => err,
    connect: () => QmpTestClient.unix(qmpPath),
    async client() {
      const c = await QmpTestClient.unix(qmpPath);
      await c.negotiate();
      return c;
    },
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode);
        const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
        proc.kill('SIGTERM');
      }),
  };
  return d;
}
