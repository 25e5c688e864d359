/**
 * A daemon (qbd or the reference) whose nbd client nodes the tests drive:
 * its own NBD server re-exports a node so that qemu-io, qemu-img and
 * nbdinfo read and write through the client node.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startDaemon, tempDir, waitFor, type Flavour, type RunningDaemon } from '../../helpers/daemons';
import type { QmpTestClient } from '../../helpers/qmp-client';

export interface ClientDaemon {
  daemon: RunningDaemon;
  qmp: QmpTestClient;
  dir: string;
  /** The daemon's own NBD server socket. */
  socket: string;
  /** Re-exports `node` writable as `name`; returns its URI. */
  reexport(node: string, name?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startClientDaemon(flavour: Flavour, extra: string[] = []): Promise<ClientDaemon> {
  const dir = tempDir(`qbd-nbdc-${flavour}-`);
  const socket = path.join(dir, 'reexport.sock');
  const daemon = await startDaemon(flavour, ['--nbd-server', `addr.type=unix,addr.path=${socket}`, ...extra], { dir });
  await waitFor(() => fs.existsSync(socket), 5_000, 'the NBD socket');
  const qmp = await daemon.client();
  return {
    daemon,
    qmp,
    dir,
    socket,
    async reexport(node, name = node) {
      await qmp.cmd('block-export-add', { type: 'nbd', id: `e-${name}`, 'node-name': node, name, writable: true });
      return `nbd+unix:///${name}?socket=${socket}`;
    },
    async stop() {
      qmp.close();
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
