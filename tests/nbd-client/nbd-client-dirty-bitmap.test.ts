/**
 * x-dirty-bitmap: the node reads block status from a server's dirty bitmap
 * context instead of base:allocation, and reports it as QEMU's client does
 * (dirty areas look like holes). A re-export of the node by qbd and by the
 * reference must map alike.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { run } from '../nbd/support/nbd-daemon';
import { startClientDaemon, type ClientDaemon } from './support/client-daemon';
import { startQemuNbd, type NbdServer } from './support/servers';

const MiB = 1 << 20;

async function map(uri: string): Promise<unknown> {
  return JSON.parse(await run('nbdinfo', ['--json', '--map', uri]));
}

describe.skipIf(!toolAvailable('qemu-nbd') || !toolAvailable('qemu-storage-daemon') || !toolAvailable('nbdinfo'))('an nbd node reading a dirty bitmap', () => {
  let dir: string;
  let server: NbdServer;
  const daemons: ClientDaemon[] = [];

  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-bitmap-');
    const image = path.join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(4 * MiB)]);
    await run('qemu-img', ['bitmap', '--add', image, 'b0']);
    // Writes made while the bitmap is enabled are recorded in it.
    await run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 ${MiB} ${MiB}`, image]);
    server = await startQemuNbd(image, { socket: path.join(dir, 'bitmap.sock') }, { format: 'qcow2', readOnly: true, extra: ['-B', 'b0'] });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('maps the bitmap as the reference does', async () => {
    const maps: unknown[] = [];
    for (const flavour of ['qbd', 'qsd'] as const) {
      const d = await startClientDaemon(flavour);
      daemons.push(d);
      await d.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'bm', server: server.address, export: 'exp', 'read-only': true, 'x-dirty-bitmap': 'qemu:dirty-bitmap:b0' });
      await d.qmp.cmd('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'bm', name: 'bm' });
      maps.push(await map(`nbd+unix:///bm?socket=${d.socket}`));
    }
    expect(maps[0]).toEqual(maps[1]);
    // The dirty MiB is what the bitmap marks: it shows as a hole, the clean rest as data.
    expect(maps[0]).toEqual([
      { offset: 0, length: MiB, type: 0, description: 'data' },
      { offset: MiB, length: MiB, type: 1, description: 'hole' },
      { offset: 2 * MiB, length: 2 * MiB, type: 0, description: 'data' },
    ]);
  });
});
