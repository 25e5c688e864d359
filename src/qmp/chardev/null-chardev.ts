/** `null`: a chardev that discards what its frontend writes and never has anything to read. */
import { outputOnlyTransport, SingleConnection, type Chardev } from './chardev';
import type { Transport } from '../transport';

export class NullChardev implements Chardev {
  readonly kind = 'null';
  readonly qomType = 'chardev-null';
  readonly offersOob = false;
  private readonly connection = new SingleConnection();

  constructor(readonly id: string) {}

  async open(): Promise<void> {
    this.connection.open(() => outputOnlyTransport(this.id, () => undefined));
  }

  attach(onConnection: (t: Transport) => void): void {
    this.connection.attach(onConnection);
  }

  async close(): Promise<void> {}

  filename(): string {
    return 'null';
  }
}
