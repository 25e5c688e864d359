/** Starting the daemon under test (qbd or qemu-storage-daemon) for a benchmark. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const QBD = path.resolve(__dirname, '..', '..', 'bin', 'qbd');

export interface Started {
  proc: ChildProcess;
  qmp: string;
  dir: string;
  stop(): Promise<void>;
}

export function onPath(program: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => fs.existsSync(path.join(d, program)));
}

export function hasReference(): boolean {
  return onPath('qemu-storage-daemon');
}

export function command(which: 'qbd' | 'qsd', args: string[]): [string, string[]] {
  return which === 'qbd' ? [process.execPath, [QBD, ...args]] : ['qemu-storage-daemon', args];
}

/** Spawns a server that writes `pidfile` once it is ready, and waits for that file. */
export async function spawnServer(cmd: string, args: string[], dir: string, pidfile: string): Promise<Started> {
  const proc = spawn(cmd, args, { stdio: 'ignore' });
  while (!fs.existsSync(pidfile)) await new Promise((r) => setTimeout(r, 5));
  return {
    proc,
    qmp: path.join(dir, 'qmp.sock'),
    dir,
    async stop() {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function start(which: 'qbd' | 'qsd', extra: string[] = []): Promise<Started> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qbd-bench-${which}-`));
  const qmp = path.join(dir, 'qmp.sock');
  const pidfile = path.join(dir, 'pid');
  const [cmd, args] = command(which, ['--chardev', `socket,id=m,path=${qmp},server=on,wait=off`, '--monitor', 'chardev=m', '--pidfile', pidfile, ...extra]);
  return spawnServer(cmd, args, dir, pidfile);
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}
