/**
 * Character devices: `socket` (UNIX or TCP server, optionally WebSocket),
 * `stdio`, `file`, `null`, `ringbuf` and `memory`. A chardev carries at
 * most one frontend, a monitor, which receives each connection the chardev
 * makes. Like QEMU's, a server socket serves one client at a time; a client
 * that connects while another is served waits, greeted only when its turn
 * comes.
 */
import type { PropertyAccessor } from '../../qom/tree';
import type { Transport } from '../transport';

/** The backends qbd implements (QAPI's ChardevBackendKind, trimmed). */
export type ChardevKind = 'file' | 'socket' | 'null' | 'stdio' | 'ringbuf' | 'memory';

export interface Chardev {
  readonly id: string;
  readonly kind: ChardevKind;
  /** The QOM type, as qom-list shows it (`chardev-socket`). */
  readonly qomType: string;
  /** Whether a monitor on it offers out-of-band execution: the reference's does only on chardevs that can run in their own context. */
  readonly offersOob: boolean;
  /** Opens files or starts listening; with wait=on, resolves once the first client has connected. */
  open(): Promise<void>;
  /** Sets who receives each connection (a monitor). */
  attach(onConnection: (t: Transport) => void): void;
  close(): Promise<void>;
  /** What query-chardev shows as `filename`. */
  filename(): string;
  /** QOM properties of the backend's class beyond `type`. */
  accessor?(property: string): PropertyAccessor | undefined;
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

/**
 * The one lasting connection of a chardev that makes no others (null,
 * ringbuf, stdio): handed to the frontend once the chardev is open and a
 * frontend is attached, whichever comes last, and again on each later
 * attach.
 */
export class SingleConnection {
  private sink: ((t: Transport) => void) | undefined;
  private make: (() => Transport) | undefined;

  get isOpen(): boolean {
    return this.make !== undefined;
  }

  /** The chardev is open: `make` builds the connection a frontend gets. */
  open(make: () => Transport): void {
    this.make = make;
    this.hand();
  }

  attach(sink: (t: Transport) => void): void {
    this.sink = sink;
    this.hand();
  }

  close(): void {
    this.make = undefined;
  }

  private hand(): void {
    if (this.make && this.sink) this.sink(this.make());
  }
}

/**
 * The one connection of a chardev that only writes what its frontend says
 * (file, null, ringbuf): nothing ever arrives from it and it never closes.
 * Lines end with CRLF, as QEMU's monitor writes them.
 */
export function outputOnlyTransport(peer: string, write: (bytes: Buffer) => void): Transport {
  return {
    peer,
    send: (text) => write(Buffer.from(text + '\r\n', 'utf8')),
    pause: () => undefined,
    resume: () => undefined,
    close: () => undefined,
    onData: () => undefined,
    onClose: () => undefined,
  };
}
