/**
 * `socket`: a UNIX (`path=`) or TCP (`host=`, `port=`) server, optionally
 * speaking WebSocket (`websocket=on`, one QMP message per text frame), or
 * a client that connects once, when the chardev is made. Without a
 * frontend, a connection is kept, unread, as the reference keeps it.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as http from 'node:http';
import * as nodePath from 'node:path';
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import type { Transport } from '../transport';
import type { PropertyAccessor } from '../../qom/tree';
import { OneAtATime, type Chardev } from './chardev';
import { acceptTls, connectTls, type ChardevTls } from './socket-tls';
import { socketTransport } from './socket-transport';

export interface SocketChardevOptions {
  id: string;
  path?: string;
  host?: string;
  port?: string;
  server: boolean;
  wait: boolean;
  websocket: boolean;
  /** TCP only: the handshake each connection goes through first. */
  tls?: ChardevTls;
  /** Client only: seconds between attempts to (re)connect; without it a client connects once, when made. */
  reconnect?: number;
}

/** One accepted client, with the addresses query-chardev shows while it is connected. */
interface Connection {
  transport: Transport;
  local: string;
  remote: string;
}

/** host:port, with brackets around an IPv6 host. */
function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? '';
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? ''}`;
}

export class SocketChardev implements Chardev {
  readonly kind = 'socket';
  readonly qomType = 'chardev-socket';
  readonly offersOob = true;
  private server: net.Server | undefined;
  private readonly clients = new OneAtATime();
  /** Connected clients, oldest (the one served) first. */
  private readonly connections: Connection[] = [];
  private firstClient: (() => void) | undefined;
  /** A reconnecting client's next attempt, and whether the chardev is going away. */
  private retry: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(private readonly opts: SocketChardevOptions) {}

  get id(): string {
    return this.opts.id;
  }

  async open(): Promise<void> {
    if (!this.opts.server) {
      // A reconnecting client is made at once and connects in the background, as the reference's does.
      if ((this.opts.reconnect ?? 0) > 0) return this.keepConnected();
      await this.connect();
      return;
    }
    const { path, host, port } = this.opts;
    const server = this.opts.websocket ? await this.websocketServer() : net.createServer((s) => this.acceptSocket(s));
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
      // Node reports a missing directory of a UNIX socket as EACCES; bind(2) says ENOENT.
      const code = path !== undefined && !fs.existsSync(nodePath.dirname(path)) ? 'ENOENT' : err.code;
      throw new Error(`Failed to bind socket${path !== undefined ? ` to ${path}` : ''}: ${strerror(code)}`);
    });
    server.on('error', (err) => log.error({ chardev: this.id, err: err.message }, 'chardev server error'));
    if (this.opts.wait) {
      log.info({ chardev: this.id }, 'waiting for a client to connect (wait=on)');
      await new Promise<void>((resolve) => (this.firstClient = resolve));
    }
  }

  /** Client mode with `reconnect`: tries now, and again `reconnect` seconds after a failure or a disconnection. */
  private keepConnected(): void {
    if (this.closing) return;
    this.connect().then(
      (t) => {
        if (this.closing) return t.close();
        t.onClose(() => this.retryLater());
      },
      (err: Error) => {
        log.warn({ chardev: this.id, err: err.message }, 'Unable to connect character device');
        this.retryLater();
      },
    );
  }

  private retryLater(): void {
    if (this.closing) return;
    this.retry = setTimeout(() => this.keepConnected(), this.opts.reconnect! * 1000);
  }

  /** Client mode: connects now, or fails with the reference's words. */
  private async connect(): Promise<Transport> {
    const { path, host, port } = this.opts;
    const where = path ?? `${host}:${port}`;
    const sock = path !== undefined ? net.createConnection(path) : net.createConnection(Number(port), host);
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      sock.destroy();
      throw new Error(`Failed to connect to '${where}': ${strerror(err.code)}`);
    });
    const stream = !this.opts.tls
      ? sock
      : await connectTls(sock, this.opts.tls, host).catch((err: Error) => {
          sock.destroy();
          throw new Error(`TLS handshake with '${where}' failed: ${err.message}`);
        });
    const t = socketTransport(stream, where);
    this.accept(t, stream);
    return t;
  }

  /** A new connection on the listening socket, after its TLS handshake when there is one. */
  private acceptSocket(s: net.Socket): void {
    if (!this.opts.tls) return this.accept(socketTransport(s, this.describePeer(s)), s);
    acceptTls(s, this.opts.tls, this.id, (secure) => this.accept(socketTransport(secure, this.describePeer(s)), secure));
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

  filename(): string {
    if (!this.opts.server) {
      const current = this.connections[0];
      if (this.opts.path !== undefined) return current ? 'unix:' : `disconnected:unix:${this.opts.path}`;
      return current ? `tcp:${current.local} <-> ${current.remote}` : `disconnected:tcp:${this.opts.host}:${this.opts.port}`;
    }
    const server = this.opts.path !== undefined ? `unix:${this.opts.path},server=on` : undefined;
    const current = this.connections[0];
    if (current) return server ?? `${this.protocol()}:${current.local},server=on <-> ${current.remote}`;
    if (server) return `disconnected:${server}`;
    const a = this.server?.address();
    const bound = a && typeof a === 'object' ? hostPort(a.address, a.port) : hostPort(this.opts.host, Number(this.opts.port));
    return `disconnected:${this.protocol()}:${bound},server=on`;
  }

  accessor(property: string): PropertyAccessor | undefined {
    switch (property) {
      case 'connected':
        return { get: () => this.connections.length > 0 };
      case 'addr':
        return { get: () => this.boundAddress() };
      default:
        return undefined;
    }
  }

  /** The listening address as a SocketAddress (the port actually bound, the host as a number). */
  private boundAddress(): Record<string, unknown> {
    if (this.opts.path !== undefined) return { type: 'unix', path: this.opts.path };
    // A client shows the address it was given.
    if (!this.opts.server) return { type: 'inet', host: this.opts.host ?? '', port: this.opts.port ?? '' };
    const a = this.server?.address();
    if (!a || typeof a !== 'object') return { type: 'inet', host: this.opts.host ?? '', port: this.opts.port ?? '' };
    return { type: 'inet', host: a.address, port: String(a.port), [a.family === 'IPv6' ? 'ipv6' : 'ipv4']: true };
  }

  private protocol(): string {
    return this.opts.websocket ? 'websocket' : 'tcp';
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.retry);
    for (const c of [...this.connections]) c.transport.close();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    // A client's path is its server's socket, not ours to remove.
    if (this.opts.server && this.opts.path !== undefined) fs.rmSync(this.opts.path, { force: true });
  }

  private accept(t: Transport, s: net.Socket): void {
    const conn: Connection = { transport: t, local: hostPort(s.localAddress, s.localPort), remote: hostPort(s.remoteAddress, s.remotePort) };
    this.connections.push(conn);
    t.onClose(() => {
      const i = this.connections.indexOf(conn);
      if (i >= 0) this.connections.splice(i, 1);
    });
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
      }, req.socket);
    });
    return httpServer;
  }
}
