/**
 * `--chardev socket`: a UNIX (`path=`) or TCP (`host=`, `port=`) server,
 * optionally speaking WebSocket (`websocket=on`, one QMP message per text
 * frame). Only server mode is supported.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as http from 'node:http';
import { log } from '../../common/log';
import type { Transport } from '../transport';
import { OneAtATime, type Chardev } from './chardev';
import { socketTransport } from './socket-transport';

export interface SocketChardevOptions {
  id: string;
  path?: string;
  host?: string;
  port?: string;
  server: boolean;
  wait: boolean;
  websocket: boolean;
}

export class SocketChardev implements Chardev {
  private server: net.Server | undefined;
  private readonly clients = new OneAtATime();
  private readonly open_ = new Set<Transport>();
  private firstClient: (() => void) | undefined;

  constructor(private readonly opts: SocketChardevOptions) {}

  get id(): string {
    return this.opts.id;
  }

  async open(): Promise<void> {
    const { path, host, port } = this.opts;
    const server = this.opts.websocket ? await this.websocketServer() : net.createServer((s) => this.accept(socketTransport(s, this.describePeer(s))));
    this.server = server;
    if (path !== undefined) {
      // QEMU removes a stale socket file before binding.
      try {
        if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
      } catch {
        /* not there */
      }
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (path !== undefined) server.listen(path, done);
      else server.listen(Number(port), host || undefined, done);
    }).catch((err: NodeJS.ErrnoException) => {
      const where = path ?? `${host ?? ''}:${port}`;
      throw new Error(`Failed to ${err.code === 'EADDRINUSE' ? 'bind socket' : 'listen on socket'} ${where}: ${err.message}`);
    });
    server.on('error', (err) => log.error({ chardev: this.id, err: err.message }, 'chardev server error'));
    if (this.opts.wait) {
      log.info({ chardev: this.id }, 'waiting for a client to connect (wait=on)');
      await new Promise<void>((resolve) => (this.firstClient = resolve));
    }
  }

  /** The address actually bound (port 0 picks one), for logs and tests. */
  address(): string {
    const a = this.server?.address();
    if (!a) return '';
    return typeof a === 'string' ? a : `${a.address}:${a.port}`;
  }

  attach(onConnection: (t: Transport) => void): void {
    this.clients.attach(onConnection);
  }

  async close(): Promise<void> {
    for (const t of this.open_) t.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (this.opts.path !== undefined) fs.rmSync(this.opts.path, { force: true });
  }

  private accept(t: Transport): void {
    this.open_.add(t);
    t.onClose(() => this.open_.delete(t));
    this.firstClient?.();
    this.firstClient = undefined;
    this.clients.offer(t);
  }

  private describePeer(s: net.Socket): string {
    return this.opts.path ?? `${s.remoteAddress}:${s.remotePort}`;
  }

  private async websocketServer(): Promise<net.Server> {
    // Loaded only when asked for: most daemons never speak WebSocket.
    const { WebSocketServer } = await import('ws');
    const httpServer = http.createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('QMP over WebSocket: upgrade required\n');
    });
    const wss = new WebSocketServer({ server: httpServer, maxPayload: 64 << 20 });
    wss.on('connection', (ws, req) => {
      const closeCallbacks: Array<() => void> = [];
      let closed = false;
      const buffered: Uint8Array[] = [];
      let deliver: ((chunk: Uint8Array) => void) | undefined;
      let paused = true;
      ws.on('message', (data: Buffer, isBinary) => {
        // One QMP message per frame: a newline keeps frames apart for the stream reader.
        const chunk = Buffer.concat([isBinary ? data : Buffer.from(data), Buffer.from('\n')]);
        if (paused || !deliver) buffered.push(chunk);
        else deliver(chunk);
      });
      ws.on('close', () => {
        if (closed) return;
        closed = true;
        for (const cb of closeCallbacks) cb();
      });
      ws.on('error', () => ws.terminate());
      const flush = (): void => {
        while (!paused && deliver && buffered.length > 0) deliver(buffered.shift()!);
      };
      this.accept({
        peer: `${req.socket.remoteAddress}:${req.socket.remotePort} (websocket)`,
        send: (text) => {
          if (ws.readyState === ws.OPEN) ws.send(text);
        },
        pause: () => {
          paused = true;
        },
        resume: () => {
          paused = false;
          flush();
        },
        close: () => ws.close(),
        onData: (cb) => {
          deliver = cb;
          flush();
        },
        onClose: (cb) => (closed ? cb() : closeCallbacks.push(cb)),
      });
    });
    return httpServer;
  }
}
