/**
 * A daemon (qbd or the reference) serving one image over NBD, set up from
 * the command line (--blockdev, --nbd-server, --export), for tests that
 * drive it with NBD clients.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startDaemon, tempDir, waitFor, type Flavour, type RunningDaemon } from '../../helpers/daemons';

export interface NbdDaemon {
  daemon: RunningDaemon;
  dir: string;
  image: string;
  socket: string;
  uri(exportName: string): string;
  stop(): Promise<void>;
}

export interface NbdDaemonOptions {
  /** Size of the raw image, created sparse. */
  size?: number;
  /** --export values besides the image's node, which is named `disk`. */
  exports?: string[];
  /** Arguments placed before --nbd-server (iothread objects…). */
  before?: string[];
  /** max-connections of the NBD server. */
  maxConnections?: number;
  /** More --nbd-server options, such as `tls-creds=ID,tls-authz=ID`. */
  serverOptions?: string;
  env?: NodeJS.ProcessEnv;
}

export async function startNbdDaemon(flavour: Flavour, opts: NbdDaemonOptions = {}): Promise<NbdDaemon> {
  const dir = tempDir(`qbd-nbd-${flavour}-`);
  const image = path.join(dir, 'disk.raw');
  fs.writeFileSync(image, Buffer.alloc(0));
  fs.truncateSync(image, opts.size ?? 4 << 20);
  const socket = path.join(dir, 'nbd.sock');
  const args = [
    ...(opts.before ?? []),
    '--blockdev', `driver=file,filename=${image},node-name=disk`,
    '--nbd-server', `addr.type=unix,addr.path=${socket}${opts.maxConnections !== undefined ? `,max-connections=${opts.maxConnections}` : ''}${opts.serverOptions ? `,${opts.serverOptions}` : ''}`,
    ...(opts.exports ?? ['type=nbd,id=e0,node-name=disk,name=disk,writable=on']).flatMap((e) => ['--export', e]),
  ];
  const daemon = await startDaemon(flavour, args, { dir, ...(opts.env ? { env: opts.env } : {}) });
  await waitFor(() => fs.existsSync(socket), 5_000, 'the NBD socket');
  return {
    daemon,
    dir,
    image,
    socket,
    uri: (name) => `nbd+unix:///${name}?socket=${socket}`,
    async stop() {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs a tool; resolves with its stdout, rejects with its stderr. */
export function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** The Debian python3 that has the `nbd` module (python3-libnbd), even when another python3 comes first in PATH. */
export const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
