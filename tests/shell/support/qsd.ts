/**
 * A throw-away qemu-storage-daemon with UNIX socket monitors (one QMP client
 * each at a time), in its own temporary directory.
 */

import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QmpClient, QmpReply, isErrorReply } from '../../../src/shell/qmp-client';
import { eventually } from './tools';

export interface StorageDaemon {
  dir: string;
  /** One socket per monitor. */
  sockets: string[];
  /** A second client, negotiated, for side effects the shell should notice. */
  connect(monitor: number): Promise<QmpClient>;
  stop(): Promise<void>;
}

export interface StartOptions {
  monitors?: number;
  /** Extra `--chardev` specs with their own monitors (TCP, WebSocket). */
  extraChardevs?: string[];
}

export async function startStorageDaemon(options: StartOptions = {}): Promise<StorageDaemon> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-shell-test-'));
  const sockets: string[] = [];
  const args: string[] = [];
  for (let i = 0; i < (options.monitors ?? 2); i++) {
    const socket = path.join(dir, `mon${i}.sock`);
    sockets.push(socket);
    args.push('--chardev', `socket,id=mon${i},path=${socket},server=on,wait=off`, '--monitor', `chardev=mon${i}`);
  }
  (options.extraChardevs ?? []).forEach((spec, index) => {
    args.push('--chardev', `${spec},id=extra${index}`, '--monitor', `chardev=extra${index}`);
  });
  const child: ChildProcess = spawn('qemu-storage-daemon', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  await eventually(
    () => {
      if (exited) throw new Error(`qemu-storage-daemon exited: ${stderr}`);
      return sockets.every((socket) => fs.existsSync(socket)) ? true : undefined;
    },
    5000,
    'qemu-storage-daemon sockets',
  );
  return {
    dir,
    sockets,
    async connect(monitor: number): Promise<QmpClient> {
      const client = await QmpClient.connect({ kind: 'unix', path: sockets[monitor]! });
      await client.negotiate();
      return client;
    },
    async stop(): Promise<void> {
      if (!exited) {
        child.kill('SIGTERM');
        await eventually(() => (exited ? true : undefined), 5000, 'qemu-storage-daemon to exit').catch(() => {
          child.kill('SIGKILL');
        });
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs a command and fails the test on an error reply. */
export async function mustExecute(client: QmpClient, command: string, args?: Record<string, unknown>): Promise<unknown> {
  const reply: QmpReply = await client.execute(command, args);
  if (isErrorReply(reply)) throw new Error(`${command} failed: ${reply.error.desc}`);
  return reply.return;
}
