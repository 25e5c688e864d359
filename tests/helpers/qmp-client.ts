/** A small QMP client for tests: UNIX, TCP or WebSocket; replies matched in order, events collected. */
import * as net from 'node:net';
import WebSocket from 'ws';

export type Json = any;

export class QmpTestClient {
  greeting: Json;
  readonly events: Json[] = [];
  private buffer = '';
  private readonly waiting: Array<(msg: Json) => void> = [];
  private readonly replies: Json[] = [];
  private eventWaiters: Array<() => void> = [];
  private send_!: (text: string) => void;
  private close_!: () => void;

  static async unix(path: string): Promise<QmpTestClient> {
    return QmpTestClient.stream(net.createConnection(path));
  }

  static async tcp(port: number, host = '127.0.0.1'): Promise<QmpTestClient> {
    return QmpTestClient.stream(net.createConnection(port, host));
  }

  static async websocket(url: string): Promise<QmpTestClient> {
    const c = new QmpTestClient();
    const ws = new WebSocket(url);
    c.send_ = (t) => ws.send(t);
    c.close_ = () => ws.close();
    const greeting = new Promise<Json>((resolve) => c.waiting.push(resolve));
    ws.on('message', (data) => c.onMessage(JSON.parse(String(data))));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    c.greeting = await greeting;
    return c;
  }

  private static async stream(sock: net.Socket): Promise<QmpTestClient> {
    const c = new QmpTestClient();
    c.send_ = (t) => sock.write(t + '\n');
    c.close_ = () => sock.destroy();
    const greeting = new Promise<Json>((resolve) => c.waiting.push(resolve));
    sock.on('data', (d) => c.onBytes(d.toString('utf8')));
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    c.greeting = await greeting;
    return c;
  }

  private onBytes(text: string): void {
    this.buffer += text;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line));
    }
  }

  private onMessage(msg: Json): void {
    if (msg.event) {
      this.events.push(msg);
      const w = this.eventWaiters;
      this.eventWaiters = [];
      w.forEach((f) => f());
      return;
    }
    const waiter = this.waiting.shift();
    if (waiter) waiter(msg);
    else this.replies.push(msg);
  }

  /** Sends raw text (a line is appended on stream transports). */
  sendRaw(text: string): void {
    this.send_(text);
  }

  /** Waits for the next reply (not an event). */
  next(timeoutMs = 10_000): Promise<Json> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a QMP reply')), timeoutMs);
      this.waiting.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  }

  async execute(command: string, args?: Json, id?: Json): Promise<Json> {
    const msg: Json = { execute: command };
    if (args !== undefined) msg.arguments = args;
    if (id !== undefined) msg.id = id;
    this.sendRaw(JSON.stringify(msg));
    return this.next();
  }

  /** execute() that expects success and returns the `return` value. */
  async cmd(command: string, args?: Json): Promise<Json> {
    const reply = await this.execute(command, args);
    if (reply.error) throw new Error(`${command} failed: ${reply.error.class}: ${reply.error.desc}`);
    return reply.return;
  }

  async negotiate(): Promise<void> {
    await this.cmd('qmp_capabilities');
  }

  async waitEvent(name: string, timeoutMs = 10_000): Promise<Json> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e) => e.event === name);
      if (i >= 0) return this.events.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`timed out waiting for event ${name}`);
      await new Promise<void>((resolve) => {
        this.eventWaiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  close(): void {
    this.close_();
  }
}

/** Deletes an export once the qemu-io client that just exited is gone on the daemon's side too (its disconnect may not have reached the export yet). */
export async function deleteExport(c: QmpTestClient, id: string): Promise<void> {
  for (let tries = 0; ; tries++) {
    const r = await c.execute('block-export-del', { id });
    if (!r.error) break;
    if (!/still in use/.test(r.error.desc) || tries >= 100) throw new Error(`block-export-del failed: ${r.error.desc}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await c.waitEvent('BLOCK_EXPORT_DELETED');
}
