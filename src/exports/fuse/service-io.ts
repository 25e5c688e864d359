/**
 * The FUSE service of an I/O context: the sessions of the FUSE exports
 * whose node lives there. The main loop mounts the file system and hands
 * over the descriptor; this context serves it until told to stop.
 */
import { assertIoContext } from '../../common/thread-context';
import { IoBackend } from '../../block/io/backend';
import type { IoContextRuntime } from '../../block/io/context-services';
import * as msg from './messages';
import { FuseSession } from './session-io';

class FuseContextService {
  private readonly sessions = new Map<string, FuseSession>();

  constructor(private readonly runtime: IoContextRuntime) {}

  add(entry: msg.FuseExportEntry): void {
    assertIoContext();
    if (this.sessions.has(entry.id)) throw new Error(`FUSE export '${entry.id}' is already served`);
    const backend = new IoBackend(this.runtime.graph.get(entry.nodeName));
    const resize = (length: number, preallocation: 'off' | 'falloc') => this.runtime.channel.request(msg.fuseResize, { id: entry.id, length, preallocation });
    const session = new FuseSession(entry, backend, resize);
    session.start();
    this.sessions.set(entry.id, session);
  }

  async remove(id: string): Promise<void> {
    assertIoContext();
    const session = this.sessions.get(id);
    if (!session) return;
    this.sessions.delete(id);
    await session.stop();
  }
}

/** Installs the FUSE service on a starting I/O context. */
export function installFuseService(runtime: IoContextRuntime): void {
  const service = new FuseContextService(runtime);
  runtime.channel.onRequest(msg.fuseExportAdd, (e) => service.add(e));
  runtime.channel.onRequest(msg.fuseExportRemove, ({ id }) => service.remove(id));
}
