/**
 * `stdio`: a chardev on standard input and output. Logs stay on stderr.
 * Only one chardev may use stdio at a time, as in the reference.
 */
import type { Transport } from '../transport';
import { SingleConnection, type Chardev } from './chardev';

let stdioInUse = false;

export class StdioChardev implements Chardev {
  readonly kind = 'stdio';
  readonly qomType = 'chardev-stdio';
  readonly offersOob = true;
  private readonly connection = new SingleConnection();

  constructor(readonly id: string) {}

  async open(): Promise<void> {
    if (stdioInUse) throw new Error('cannot use stdio by multiple character devices');
    stdioInUse = true;
    this.connection.open(() => stdioTransport());
  }

  attach(onConnection: (t: Transport) => void): void {
    this.connection.attach(onConnection);
  }

  async close(): Promise<void> {
    if (!this.connection.isOpen) return;
    this.connection.close();
    stdioInUse = false;
    process.stdin.pause();
  }

  filename(): string {
    return 'stdio';
  }
}

/** Standard input and output as a frontend's connection; lines end with CRLF. */
function stdioTransport(): Transport {
  const closeCallbacks: Array<() => void> = [];
  const stdin = process.stdin;
  stdin.on('end', () => closeCallbacks.forEach((cb) => cb()));
  return {
    peer: 'stdio',
    send: (text) => process.stdout.write(text + '\r\n'),
    pause: () => stdin.pause(),
    resume: () => stdin.resume(),
    close: () => stdin.pause(),
    onData: (cb) => stdin.on('data', cb),
    onClose: (cb) => closeCallbacks.push(cb),
  };
}
