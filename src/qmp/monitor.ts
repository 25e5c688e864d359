/**
 * One QMP session on one connection: the greeting, capability negotiation,
 * the JSON reader, replies in request order, and events once negotiated.
 * Commands from one session run one after another; a connection that goes
 * away mid-command simply gets no reply.
 */
import { log } from '../common/log';
import { assertMainLoop } from '../common/thread-context';
import type { Dispatcher } from './dispatcher';
import { addEventSink, removeEventSink, type EventSink, type QmpEvent } from './events';
import { JsonStreamReader } from './json-reader';
import { toQmpJson, toQmpJsonPretty } from './qmp-json';
import type { Transport } from './transport';

/** Requests read ahead of the one running before the connection stops being read (QEMU's queue holds 8). */
const MAX_QUEUED = 8;

export interface MonitorOptions {
  pretty: boolean;
  greeting: () => unknown;
  /**
   * Settles once the daemon has applied its whole command line: a client
   * that connects earlier is greeted and answered only then, as QEMU's
   * monitors run only once start-up is over.
   */
  started: Promise<void>;
}

type Pending = { kind: 'value'; value: unknown } | { kind: 'error'; message: string };

export class MonitorSession implements EventSink {
  negotiated = false;
  oobEnabled = false;
  private readonly queue: Pending[] = [];
  private running = false;
  private closed = false;
  private paused = false;
  private readonly reader: JsonStreamReader;

  constructor(
    private readonly transport: Transport,
    private readonly dispatcher: Dispatcher,
    private readonly options: MonitorOptions,
  ) {
    assertMainLoop();
    this.reader = new JsonStreamReader((ev) => this.enqueue(ev.kind === 'value' ? { kind: 'value', value: ev.value } : { kind: 'error', message: ev.message }));
    // Until start-up is over, what the client sends waits here.
    let early: Uint8Array[] | undefined = [];
    transport.onData((chunk) => (early ? early.push(chunk) : this.reader.push(chunk)));
    transport.onClose(() => this.onClose());
    log.debug({ peer: transport.peer }, 'monitor connected');
    void options.started.then(() => {
      if (this.closed) return;
      addEventSink(this);
      this.write({ QMP: this.options.greeting() });
      const pending = early!;
      early = undefined;
      for (const chunk of pending) this.reader.push(chunk);
    });
  }

  /** Called by qmp_capabilities. */
  completeNegotiation(oob: boolean): void {
    this.negotiated = true;
    this.oobEnabled = oob;
  }

  sendEvent(ev: QmpEvent): void {
    if (this.negotiated && !this.closed) this.write(ev);
  }

  private write(msg: unknown): void {
    if (this.closed) return;
    const text = this.options.pretty ? toQmpJsonPretty(msg) : toQmpJson(msg);
    this.transport.send(text);
  }

  private enqueue(item: Pending): void {
    this.queue.push(item);
    if (this.queue.length > MAX_QUEUED && !this.paused) {
      this.paused = true;
      this.transport.pause();
    }
    if (!this.running) void this.drainQueue();
  }

  private async drainQueue(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const item = this.queue.shift()!;
        if (this.paused && this.queue.length <= MAX_QUEUED / 2) {
          this.paused = false;
          this.transport.resume();
        }
        if (item.kind === 'error') {
          this.write({ error: { class: 'GenericError', desc: item.message } });
          continue;
        }
        this.write(await this.dispatcher.dispatch(item.value, this));
      }
    } finally {
      this.running = false;
    }
  }

  private onClose(): void {
    this.closed = true;
    this.queue.length = 0;
    this.reader.end();
    removeEventSink(this);
    log.debug({ peer: this.transport.peer }, 'monitor disconnected');
  }
}
