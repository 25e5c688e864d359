/**
 * `stdio`: a chardev on standard input and output. Logs stay on stderr.
 * Only one chardev may use stdio at a time, as in the reference.
 */
import type { Transport } from '../transport';
import type { Chardev } from './chardev';

let stdioInUse = false;

export class StdioChardev implements Chardev {
  readonly kind = 'stdio';
  readonly qomType = 'chardev-stdio';
  readonly offersOob = true;
  private onConnection: ((t: Transport) => void) | undefined;
  private opened = false;

  constructor(readonly id: string) {}

  async open(): Promise<void> {
    if (stdioInUse) throw new Error('cannot use stdio by multiple character devices');
    stdioInUse = true;
    this.opened = true;
    this.offer();
  }

  attach(onConnection: (t: Transport) => void): void {
    this.onConnection = onConnection;
    this.offer();
  }

  async close(): Promise<void> {
    if (!this.opened) return;
    this.opened = false;
    stdioInUse = false;
    process.stdin.pause();
  }

  filename(): string {
    return 'stdio';
  }

  private offer(): void {
    if (!this.opened || !this.onConnection) return;
    const closeCallbacks: Array<() => void> = [];
    const stdin = process.stdin;
    stdin.on('end', () => closeCallbacks.forEach((cb) => cb()));
    this.onConnection({
      peer: 'stdio',
      send: (text) => process.stdout.write(text + '\r\n'),
      pause: () => stdin.pause(),
      resume: () => stdin.resume(),
      close: () => stdin.pause(),
      onData: (cb) => stdin.on('data', cb),
      onClose: (cb) => closeCallbacks.push(cb),
    });
  }
}
