/**
 * The main loop's handle on one I/O context: a worker thread running
 * `block/io/context-main.ts`, and the channel to it. The default context
 * always exists; `iothread` objects add more.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Channel } from '../../common/channel';
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import * as proto from '../common/io-context-protocol';

const ENTRY = path.join(__dirname, '..', 'io', 'context-main.js');

export class IoContext {
  readonly channel: Channel;
  private readonly worker: Worker;
  private exited = false;
  private stopping = false;
  /** Nodes whose I/O half lives here. */
  readonly nodes = new Set<string>();

  /** `iothread` is the id of the iothread object, or undefined for the default context. */
  constructor(readonly iothread: string | undefined) {
    assertMainLoop();
    this.worker = new Worker(ENTRY, { workerData: { name: iothread ?? 'default' }, stdout: false, stderr: false });
    this.channel = new Channel(this.worker);
    this.worker.on('error', (err) => log.error({ context: this.name, err: err.message, stack: err.stack }, 'I/O context failed'));
    this.worker.on('exit', (code) => {
      this.exited = true;
      this.channel.close(`I/O context ${this.name} exited`);
      if (code !== 0 && !this.stopping) log.error({ context: this.name, code }, 'I/O context exited');
    });
    this.channel.onNotification(proto.ioEvent, (ev) => ioEventHandlers.get(ev.kind)?.(this, ev));
  }

  get name(): string {
    return this.iothread ?? 'default';
  }

  /** Flushes and detaches every node, then ends the worker. */
  async stop(): Promise<void> {
    assertMainLoop();
    if (this.exited) return;
    this.stopping = true;
    try {
      await this.channel.request(proto.shutdownContext, undefined);
    } finally {
      await this.worker.terminate();
    }
  }
}

type IoEventHandler = (ctx: IoContext, ev: { kind: string; node?: string; data?: unknown }) => void;
const ioEventHandlers = new Map<string, IoEventHandler>();

/** Where notifications of one kind from I/O contexts go (a corrupt image, a write threshold, job progress). */
export function onIoEvent(kind: string, handler: IoEventHandler): void {
  ioEventHandlers.set(kind, handler);
}
