/**
 * The vhost-user-blk service of an I/O context: for each export whose node
 * lives here, a listening UNIX socket and at most one front-end at a time,
 * both served from this context, so requests reach the node without
 * crossing a thread.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { strerror } from '../../../common/errno';
import { log } from '../../../common/log';
import { assertIoContext } from '../../../common/thread-context';
import { IoBackend } from '../../../block/io/backend';
import type { IoContextRuntime } from '../../../block/io/context-services';
import { dupFd } from '../../../native/native';
import * as msg from '../messages';
import { VhostUserConnection } from './connection';

interface ServedExport {
  entry: msg.VhostUserBlkEntry;
  server: net.Server;
  backend: IoBackend;
  connection: VhostUserConnection | undefined;
}

function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

class VhostUserBlkService {
  private readonly exports = new Map<string, ServedExport>();

  constructor(private readonly runtime: IoContextRuntime) {}

  async start(entry: msg.VhostUserBlkEntry): Promise<void> {
    assertIoContext();
    // Sockets are accepted paused: libuv must never read from them, or descriptors sent with the bytes would be lost.
    const server = net.createServer({ pauseOnConnect: true });
    const served: ServedExport = { entry, server, backend: new IoBackend(this.runtime.graph.get(entry.nodeName)), connection: undefined };
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // A stale socket file from an earlier run would make bind fail.
      try {
        if (fs.statSync(entry.path).isSocket()) fs.unlinkSync(entry.path);
      } catch {
        // Nothing there.
      }
      server.listen(entry.path, () => resolve());
    }).catch((err: NodeJS.ErrnoException) => {
      // Node reports a missing directory of a UNIX socket as EACCES; bind(2) says ENOENT.
      const code = !fs.existsSync(path.dirname(entry.path)) ? 'ENOENT' : err.code;
      throw Object.assign(new Error(`Failed to bind socket to ${entry.path}: ${strerror(code)}`), { code });
    });
    server.on('error', (err) => log.error({ export: entry.id, err: err.message }, 'vhost-user-blk listener failed'));
    server.on('connection', (socket) => this.accept(served, socket));
    this.exports.set(entry.id, served);
  }

  private accept(served: ServedExport, socket: net.Socket): void {
    const fd = socketFd(socket);
    if (served.connection || fd === undefined) {
      // One front-end at a time, as the device has one driver.
      socket.destroy();
      return;
    }
    let copy: number;
    try {
      copy = dupFd(fd);
    } catch (err) {
      log.error({ export: served.entry.id, err: (err as Error).message }, 'vhost-user connection could not be taken from its socket');
      socket.destroy();
      return;
    }
    socket.destroy();
    const { entry, backend } = served;
    const conn = new VhostUserConnection(copy, { ...entry, backend });
    served.connection = conn;
    void conn.whenGone().then(() => {
      if (served.connection === conn) served.connection = undefined;
    });
  }

  async stop(id: string): Promise<void> {
    assertIoContext();
    const served = this.exports.get(id);
    if (!served) return;
    this.exports.delete(id);
    await new Promise<void>((resolve) => served.server.close(() => resolve()));
    await served.connection?.close();
  }
}

/** Installs the vhost-user-blk service on a starting I/O context. */
export function installVhostUserBlkService(runtime: IoContextRuntime): void {
  const service = new VhostUserBlkService(runtime);
  const ch = runtime.channel;
  ch.onRequest(msg.vhostUserBlkStart, (e) => service.start(e));
  ch.onRequest(msg.vhostUserBlkStop, ({ id }) => service.stop(id));
}
