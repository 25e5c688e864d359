/**
 * The NBD service of an I/O context. Every context keeps the exports it
 * knows and serves the transmission phase of those whose node lives in it.
 * The default context also owns the listening socket and runs negotiation;
 * a client that chooses an export living in an iothread's context is handed
 * over there by descriptor (through the main loop, which alone talks to
 * every context). See docs/exports.md.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { strerror } from '../../common/errno';
import { log } from '../../common/log';
import { assertIoContext } from '../../common/thread-context';
import { IoBackend } from '../../block/io/backend';
import type { IoContextRuntime } from '../../block/io/context-services';
import { dupFd, dupFdAvailable } from '../../native/native';
import { serverTlsOptions } from '../../crypto/tls-options';
import { certificateInfo } from '../../crypto/x509-info';
import type { Duplex } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import { PortStream, relayOverPort } from './port-relay';
import { TransmissionConnection, type Transport } from './connection';
import { writeLargeChunksAlone } from './tls-writes';
import { greeting, Handshake, type ExportDirectory } from './handshake';
import * as msg from './messages';

interface KnownExport {
  entry: msg.NbdExportEntry;
  /** Present where the node lives. */
  backend?: IoBackend;
  readonly connections: Set<TransmissionConnection>;
}

/** The file descriptor under a connected socket (libuv's handle keeps it). */
function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Takes a plain socket's connection out of it: stops libuv reading, collects
 * what the stream already buffered (it comes after `leftover`), and closes
 * the socket over a duplicate of its descriptor. Undefined (the socket
 * destroyed) when that cannot be done.
 */
function detachDescriptor(socket: net.Socket, leftover: Buffer): { fd: number; leftover: Buffer } | undefined {
  const fd = socketFd(socket);
  if (fd === undefined) return void socket.destroy();
  (socket as unknown as { _handle?: { readStop?: () => void } })._handle?.readStop?.();
  const parts = [leftover];
  for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) parts.push(c);
  let copy: number;
  try {
    copy = dupFd(fd);
  } catch (err) {
    log.error({ err: (err as Error).message }, 'NBD connection could not be detached from its socket');
    return void socket.destroy();
  }
  socket.destroy();
  return { fd: copy, leftover: parts.length === 1 ? leftover : Buffer.concat(parts) };
}

class NbdContextService implements ExportDirectory {
  private readonly exports = new Map<string, KnownExport>();
  private server: net.Server | undefined;
  private params: msg.NbdListenParams | undefined;
  /** Every socket this context accepted and still holds, negotiating or served. */
  private readonly sockets = new Set<Duplex>();
  /** Connections handed to other contexts and still open there: they count against max-connections. */
  private readonly handedOff = new Set<number>();
  private nextTicket = 1;

  constructor(private readonly runtime: IoContextRuntime) {}

  // ---- ExportDirectory, for negotiation --------------------------------------

  find(name: string): msg.NbdExportEntry | undefined {
    return this.exports.get(name)?.entry;
  }

  list(): msg.NbdExportEntry[] {
    return [...this.exports.values()].map((e) => e.entry);
  }

  sizeOf(entry: msg.NbdExportEntry): number {
    return this.exports.get(entry.name)?.backend?.length ?? entry.size;
  }

  canServe(entry: msg.NbdExportEntry, tlsSession: boolean): boolean {
    // A TLS session is relayed over a port; a plain socket moves by descriptor.
    return entry.home === this.runtime.name || tlsSession || dupFdAvailable;
  }

  // ---- listening -------------------------------------------------------------

  async listen(params: msg.NbdListenParams): Promise<void> {
    assertIoContext();
    if (this.server) throw new Error('NBD server already running');
    const server = net.createServer((socket) => this.accept(socket));
    const addr = params.address;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (addr.type === 'unix') {
        // A stale socket file from an earlier run would make bind fail.
        try {
          if (fs.statSync(addr.path).isSocket()) fs.unlinkSync(addr.path);
        } catch {
          // Nothing there.
        }
        server.listen(addr.path, () => resolve());
      } else {
        server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.ipv6 === true && addr.ipv4 === false }, () => resolve());
      }
    }).catch((err: NodeJS.ErrnoException) => {
      // Node reports a missing directory of a UNIX socket as EACCES; bind(2) says ENOENT.
      const code = addr.type === 'unix' && !fs.existsSync(path.dirname(addr.path)) ? 'ENOENT' : err.code;
      const where = addr.type === 'unix' ? ` to ${addr.path}` : '';
      throw Object.assign(new Error(`Failed to bind socket${where}: ${strerror(code)}`), { code });
    });
    server.on('error', (err) => log.error({ err: err.message }, 'NBD listener failed'));
    this.server = server;
    this.params = params;
  }

  releaseTicket(ticket: number): void {
    this.handedOff.delete(ticket);
  }

  async stopListening(): Promise<void> {
    const server = this.server;
    this.handedOff.clear();
    this.server = undefined;
    this.params = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    const params = this.params;
    if (!params) return void socket.destroy();
    if (params.maxConnections > 0 && this.sockets.size + this.handedOff.size >= params.maxConnections) {
      socket.destroy();
      return;
    }
    this.track(socket);
    socket.setNoDelay(true);
    // Covers the TLS handshake too: a client stalling inside it is dropped like any other.
    const timer = setTimeout(() => stream.destroy(), params.handshakeTimeoutMs);
    timer.unref();
    /** What negotiation reads and writes: the socket, then the TLS session over it. */
    let stream: net.Socket = socket;
    const onData = (chunk: Buffer): void => handshake.push(chunk);
    const handshake = new Handshake(
      this,
      {
        write: (buf) => {
          if (!stream.destroyed) stream.write(buf);
        },
        close: () => {
          clearTimeout(timer);
          stream.end();
          stream.destroySoon();
        },
        done: (entry, state, leftover) => {
          clearTimeout(timer);
          stream.removeListener('data', onData);
          stream.pause();
          if (entry.home === this.runtime.name) this.serve(stream, state, leftover);
          else if (stream instanceof tls.TLSSocket) this.relay(stream, state, leftover);
          else this.handOff(stream, state, leftover);
        },
        startTls: () => {
          socket.removeListener('data', onData);
          socket.pause();
          const secure = this.startTls(socket, params.tls!, () => {
            secure?.on('data', onData);
            handshake.tlsEstablished();
          });
          if (secure) stream = secure;
        },
      },
      params.tls !== undefined,
    );
    socket.on('data', onData);
    socket.write(greeting());
  }

  private track(socket: Duplex): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  }

  /** Runs the TLS handshake over an accepted socket, checks the peer against tls-authz, and hands on the session. */
  private startTls(socket: net.Socket, config: NonNullable<msg.NbdListenParams['tls']>, ready: () => void): tls.TLSSocket | undefined {
    let pskUser: string | undefined;
    let secure: tls.TLSSocket;
    try {
      secure = new tls.TLSSocket(socket, serverTlsOptions(config.creds, (user) => (pskUser = user)));
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'NBD TLS session could not be set up');
      socket.destroy();
      return undefined;
    }
    this.sockets.delete(socket);
    this.track(secure);
    const fail = (why: string): void => {
      log.warn({ reason: why }, 'NBD client refused: TLS handshake failed');
      secure.destroy();
    };
    secure.once('error', (err) => fail(err.message));
    secure.once('secure', () => {
      const identity = this.peerIdentity(secure, config, pskUser);
      if (config.authz === undefined || identity === undefined) return ready();
      this.runtime.channel
        .request(msg.nbdAuthzCheck, { authz: config.authz, identity })
        .then((allowed) => {
          if (allowed) return ready();
          fail(`TLS ${config.creds.type === 'x509' ? 'x509' : 'PSK'} authz check for ${identity} is denied`);
        })
        .catch((err: Error) => fail(err.message));
    });
    return secure;
  }

  /** The name tls-authz checks, as QEMU takes it: the PSK username, or the client certificate's DN when peers are verified. */
  private peerIdentity(secure: tls.TLSSocket, config: NonNullable<msg.NbdListenParams['tls']>, pskUser: string | undefined): string | undefined {
    if (config.creds.type === 'psk') return pskUser ?? '';
    if (!config.creds.verifyPeer) return undefined;
    const cert = secure.getPeerX509Certificate();
    return cert ? certificateInfo(cert.raw).subject : '';
  }

  /** Moves a negotiated connection to the context its export lives in. */
  private handOff(socket: net.Socket, state: msg.NegotiatedState, leftover: Buffer): void {
    const detached = detachDescriptor(socket, leftover);
    if (!detached) return;
    const ticket = this.nextTicket++;
    this.handedOff.add(ticket);
    this.runtime.channel.request(msg.nbdHandoff, { fd: detached.fd, ticket, state, leftover: detached.leftover }).catch((err: Error) => {
      log.error({ err: err.message }, 'NBD connection hand-over failed');
      this.handedOff.delete(ticket);
      fs.close(detached.fd, () => undefined);
    });
  }

  /**
   * Serves a TLS session from the export's context: the session stays here
   * (it cannot leave this thread) and its plaintext goes over a port. The
   * session stays in `sockets`, so it counts against max-connections here.
   */
  private relay(secure: tls.TLSSocket, state: msg.NegotiatedState, leftover: Buffer): void {
    writeLargeChunksAlone(secure);
    const { port1, port2 } = new MessageChannel();
    const ticket = this.nextTicket++;
    this.runtime.channel.request(msg.nbdHandoff, { port: port2, ticket, state, leftover }, [port2]).then(
      () => relayOverPort(secure, port1),
      (err: Error) => {
        log.error({ err: err.message }, 'NBD connection hand-over failed');
        port1.close();
        secure.destroy();
      },
    );
  }

  // ---- serving ---------------------------------------------------------------

  /**
   * Serves a connection negotiated here. A plain socket is opened afresh
   * over its descriptor, as one handed over from another context is, so
   * that its reads land where the request parser asks.
   */
  private serve(stream: net.Socket, state: msg.NegotiatedState, leftover: Buffer): void {
    if (stream instanceof tls.TLSSocket || !dupFdAvailable) return void this.serveOver({ stream }, state, leftover);
    // The socket is closed under the copy of its descriptor: it no longer counts against max-connections.
    this.sockets.delete(stream);
    const detached = detachDescriptor(stream, leftover);
    if (!detached) return;
    const socket = this.serveOver({ fd: detached.fd }, state, detached.leftover);
    if (socket) this.track(socket);
  }

  /** Serves a connection in the export's context; returns the socket it is served over. */
  private serveOver(transport: Transport, state: msg.NegotiatedState, leftover: Buffer): Duplex | undefined {
    const known = this.exports.get(state.exportName);
    if (!known?.backend) {
      if ('fd' in transport) fs.close(transport.fd, () => undefined);
      else transport.stream.destroy();
      return undefined;
    }
    const backend = known.backend;
    if ('stream' in transport && transport.stream instanceof tls.TLSSocket) writeLargeChunksAlone(transport.stream);
    const graph = this.runtime.graph;
    const served = { entry: known.entry, backend, alive: () => graph.nodes.get(backend.root.name) === backend.root };
    const conn = new TransmissionConnection(transport, served, state, leftover, (c) => known.connections.delete(c));
    known.connections.add(conn);
    return conn.socket;
  }

  adopt(params: msg.Handoff): void {
    assertIoContext();
    const leftover = Buffer.from(params.leftover.buffer, params.leftover.byteOffset, params.leftover.byteLength);
    let transport: Transport;
    if (params.port) {
      const relayed = new PortStream(params.port);
      relayed.pause();
      transport = { stream: relayed };
    } else {
      transport = { fd: params.fd! };
    }
    const socket = this.serveOver(transport, params.state, leftover);
    if (!socket) {
      this.runtime.channel.notify(msg.nbdClientGone, { ticket: params.ticket });
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.runtime.channel.notify(msg.nbdClientGone, { ticket: params.ticket });
    });
  }

  exportAdd(entry: msg.NbdExportEntry): void {
    assertIoContext();
    const known: KnownExport = { entry, connections: new Set() };
    if (entry.home === this.runtime.name) known.backend = new IoBackend(this.runtime.graph.get(entry.nodeName));
    this.exports.set(entry.name, known);
  }

  async exportRemove(name: string): Promise<void> {
    assertIoContext();
    const known = this.exports.get(name);
    if (!known) return;
    this.exports.delete(name);
    const conns = [...known.connections];
    for (const c of conns) c.close();
    await Promise.all(conns.map((c) => c.whenGone()));
  }

  /** Clients still using the export: one that asked to disconnect (or went away) no longer counts, though its close may still be under way. */
  clients(name: string): number {
    let n = 0;
    for (const c of this.exports.get(name)?.connections ?? []) if (!c.leaving) n++;
    return n;
  }
}

/** Installs the NBD service on a starting I/O context. */
export function installNbdService(runtime: IoContextRuntime): void {
  const service = new NbdContextService(runtime);
  const ch = runtime.channel;
  ch.onRequest(msg.nbdListen, (p) => service.listen(p));
  ch.onRequest(msg.nbdStopListening, () => service.stopListening());
  ch.onRequest(msg.nbdExportAdd, (e) => service.exportAdd(e));
  ch.onRequest(msg.nbdExportRemove, ({ name }) => service.exportRemove(name));
  ch.onRequest(msg.nbdExportClients, ({ name }) => service.clients(name));
  ch.onRequest(msg.nbdAdopt, (p) => service.adopt(p));
  ch.onNotification(msg.nbdReleaseTicket, ({ ticket }) => service.releaseTicket(ticket));
}
