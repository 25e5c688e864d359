/** `null`: a chardev that discards what its frontend writes and never has anything to read. */
import { outputOnlyTransport, type Chardev } from './chardev';
import type { Transport } from '../transport';

export class NullChardev implements Chardev {
  readonly kind = 'null';
  readonly qomType = 'chardev-null';
  readonly offersOob = false;
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

  async close(): Promise<void> {}

  filename(): string {
    return 'null';
  }

  private offer(): void {
    if (this.opened && this.onConnection) this.onConnection(outputOnlyTransport(this.id, () => undefined));
  }
}
