/**
 * `file`: what the frontend writes goes to `out` (created if needed,
 * truncated unless `append`); `in`, when given, is opened for reading as
 * the reference does, but a monitor on a file chardev takes no input from
 * it (see docs/monitors.md).
 */
import * as fs from 'node:fs';
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import { outputOnlyTransport, type Chardev } from './chardev';
import type { Transport } from '../transport';

export interface FileChardevOptions {
  out: string;
  in?: string;
  append: boolean;
}

/** Opens a file as QEMU's chardevs do, with its error text. */
export function openChardevFile(path: string, flags: number): number {
  try {
    return fs.openSync(path, flags, 0o666);
  } catch (err) {
    throw new Error(`Could not open '${path}': ${strerror((err as NodeJS.ErrnoException).code)}`);
  }
}

export class FileChardev implements Chardev {
  readonly kind = 'file';
  readonly qomType = 'chardev-file';
  readonly offersOob = true;
  private outFd: number | undefined;
  private inFd: number | undefined;
  private onConnection: ((t: Transport) => void) | undefined;

  constructor(
    readonly id: string,
    private readonly opts: FileChardevOptions,
  ) {}

  async open(): Promise<void> {
    const { O_WRONLY, O_CREAT, O_APPEND, O_TRUNC, O_RDONLY } = fs.constants;
    this.outFd = openChardevFile(this.opts.out, O_WRONLY | O_CREAT | (this.opts.append ? O_APPEND : O_TRUNC));
    if (this.opts.in !== undefined) {
      try {
        this.inFd = openChardevFile(this.opts.in, O_RDONLY);
      } catch (err) {
        fs.closeSync(this.outFd);
        this.outFd = undefined;
        throw err;
      }
    }
    this.offer();
  }

  attach(onConnection: (t: Transport) => void): void {
    this.onConnection = onConnection;
    this.offer();
  }

  async close(): Promise<void> {
    for (const fd of [this.outFd, this.inFd]) if (fd !== undefined) fs.closeSync(fd);
    this.outFd = this.inFd = undefined;
  }

  filename(): string {
    return 'file';
  }

  private offer(): void {
    if (this.outFd === undefined || !this.onConnection) return;
    const fd = this.outFd;
    this.onConnection(
      outputOnlyTransport(this.opts.out, (bytes) => {
        if (this.outFd !== fd) return;
        try {
          fs.writeSync(fd, bytes);
        } catch (err) {
          // A full disk loses the output, not the daemon.
          log.warn({ chardev: this.id, err: (err as Error).message }, 'chardev file write failed');
        }
      }),
    );
  }
}
