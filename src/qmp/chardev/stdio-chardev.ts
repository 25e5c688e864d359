/** `--chardev stdio`: a monitor on standard input and output. Logs stay on stderr. */
import type { Transport } from '../transport';
import type { Chardev } from './chardev';

export class StdioChardev implements Chardev {
  private onConnection: ((t: Transport) => void) | undefined;
  private opened = false;

  constructor(readonly id: string) {}

  async open(): Promise<void> {
    this.opened = true;
    this.offer();
  }

  attach(onConnection: (t: Transport) => void): void {
    this.onConnection = onConnection;
    this.offer();
  }

  async close(): Promise<void> {
    process.stdin.pause();
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
