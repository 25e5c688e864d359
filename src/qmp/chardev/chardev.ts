/**
 * Character devices that carry monitors: `socket` (UNIX or TCP, optionally
 * WebSocket) and `stdio`. Like QEMU's, a server socket serves one client at a
 * time; a client that connects while another is served waits, greeted only
 * when its turn comes.
 */
import type { Transport } from '../transport';

export interface Chardev {
  readonly id: string;
  /** Starts listening; with wait=on, resolves once the first client has connected. */
  open(): Promise<void>;
  /** Sets who receives each connection (a monitor). */
  attach(onConnection: (t: Transport) => void): void;
  close(): Promise<void>;
}

/** Hands out connections one at a time, the next when the current one closes. */
export class OneAtATime {
  private readonly waiting: Transport[] = [];
  private busy = false;
  private sink: ((t: Transport) => void) | undefined;

  attach(sink: (t: Transport) => void): void {
    this.sink = sink;
    this.next();
  }

  offer(t: Transport): void {
    this.waiting.push(t);
    t.onClose(() => {
      const i = this.waiting.indexOf(t);
      if (i >= 0) this.waiting.splice(i, 1);
    });
    this.next();
  }

  private next(): void {
    if (this.busy || !this.sink) return;
    const t = this.waiting.shift();
    if (!t) return;
    this.busy = true;
    t.onClose(() => {
      this.busy = false;
      this.next();
    });
    t.resume();
    this.sink(t);
  }
}
