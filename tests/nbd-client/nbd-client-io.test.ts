/**
 * The nbd client node reading and writing through real servers: qemu-nbd,
 * nbdkit (memory and file plugins) and the reference's NBD export. The same
 * qemu-io script runs on a local model file and, through qbd's re-export,
 * on the client node; `qemu-img compare` then finds the model, the server's
 * data and what the client node reads identical. Block status read through
 * the node is the server's own.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { run } from '../nbd/support/nbd-daemon';
import { startClientDaemon, type ClientDaemon } from './support/client-daemon';
import { sparseFile, startNbdkit, startQemuNbd, type NbdServer } from './support/servers';

const SIZE = 8 << 20;

/** Writes of every kind, aligned and not, with FUA, zeroes with and without unmap, trims. */
const SCRIPT = [
  'write -P 0x11 0 64k',
  'write -P 0x22 1000 3000',
  'write -f -P 0x33 1M 1M',
  'write -P 0x44 3M 5M',
  'write -z 3584k 256k',
  'write -z -u 4M 1M',
  'discard 6M 512k',
  'write -P 0x55 7340544 1536',
  'flush',
];

/** qemu-io with discard passed down, so a trim punches a hole in the model as it does on the servers. */
async function qemuIo(target: string, commands: string[], readOnly = false): Promise<string> {
  return run('qemu-io', ['-f', 'raw', readOnly ? '-r' : '-d', ...(readOnly ? [] : ['unmap']), ...commands.flatMap((c) => ['-c', c]), target], 60_000);
}

/** nbdinfo --map output as data/hole runs, adjacent runs of one kind merged (servers may split them differently). */
async function dataRuns(uri: string): Promise<Array<[number, number, boolean]>> {
  const extents = JSON.parse(await run('nbdinfo', ['--json', '--map', uri])) as Array<{ offset: number; length: number; type: number }>;
  const runs: Array<[number, number, boolean]> = [];
  for (const e of extents) {
    const data = (e.type & 1) === 0;
    const last = runs[runs.length - 1];
    if (last && last[2] === data) last[1] += e.length;
    else runs.push([e.offset, e.length, data]);
  }
  return runs;
}

interface Backend {
  name: string;
  tools: string[];
  start(dir: string): Promise<{ server: NbdServer; image?: string; stop(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'qemu-nbd',
    tools: ['qemu-nbd'],
    async start(dir) {
      const image = path.join(dir, 'served.raw');
      sparseFile(image, SIZE);
      const server = await startQemuNbd(image, { socket: path.join(dir, 'qemu-nbd.sock') });
      return { server, image, stop: () => server.stop() };
    },
  },
  {
    name: 'nbdkit memory',
    tools: ['nbdkit'],
    async start(dir) {
      const server = await startNbdkit(['memory', `size=${SIZE}`], { socket: path.join(dir, 'nbdkit.sock') });
      return { server, stop: () => server.stop() };
    },
  },
  {
    // The client must keep to the server's limits: 4 KiB alignment, 64 KiB at most per request.
    name: 'nbdkit memory with strict block size limits',
    tools: ['nbdkit'],
    async start(dir) {
      const server = await startNbdkit(
        ['--filter=blocksize-policy', 'memory', `size=${SIZE}`, 'blocksize-minimum=4096', 'blocksize-preferred=65536', 'blocksize-maximum=65536', 'blocksize-error-policy=error'],
        { socket: path.join(dir, 'nbdkit.sock') },
      );
      return { server, stop: () => server.stop() };
    },
  },
  {
    name: 'nbdkit file',
    tools: ['nbdkit'],
    async start(dir) {
      const image = path.join(dir, 'served.raw');
      sparseFile(image, SIZE);
      const server = await startNbdkit(['file', `file=${image}`], { socket: path.join(dir, 'nbdkit.sock') });
      return { server, image, stop: () => server.stop() };
    },
  },
  {
    name: 'the reference export',
    tools: ['qemu-storage-daemon'],
    async start(dir) {
      const image = path.join(dir, 'served.raw');
      sparseFile(image, SIZE);
      const sock = path.join(dir, 'qsd.sock');
      const qsd: RunningDaemon = await startDaemon('qsd', [
        '--blockdev', `driver=file,filename=${image},node-name=disk,discard=unmap`,
        '--nbd-server', `addr.type=unix,addr.path=${sock}`,
        '--export', 'type=nbd,id=e0,node-name=disk,name=exp,writable=on',
      ], { dir: tempDir('qbd-nbdc-qsd-') });
      const server: NbdServer = {
        proc: qsd.proc,
        address: { type: 'unix', path: sock },
        uri: `nbd+unix:///exp?socket=${sock}`,
        stop: async () => void (await qsd.stop()),
        kill: async () => void qsd.proc.kill('SIGKILL'),
      };
      return { server, image, stop: server.stop };
    },
  },
];

for (const backend of backends) {
  describe.skipIf(!toolAvailable('qemu-io') || !toolAvailable('nbdinfo') || !backend.tools.every(toolAvailable))(`an nbd node on ${backend.name}`, () => {
    let dir: string;
    let served: Awaited<ReturnType<Backend['start']>>;
    let qbd: ClientDaemon;
    let through: string;
    let model: string;

    beforeAll(async () => {
      dir = tempDir('qbd-nbdc-io-');
      served = await backend.start(dir);
      qbd = await startClientDaemon('qbd');
      const exp = served.server.uri.match(/^nbd(?:\+unix)?:\/\/[^/]*\/([^?]*)/)?.[1] ?? '';
      await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'remote', discard: 'unmap', server: served.server.address, ...(exp ? { export: exp } : {}) });
      through = await qbd.reexport('remote');
      model = path.join(dir, 'model.raw');
      sparseFile(model, SIZE);
    }, 60_000);

    afterAll(async () => {
      await qbd?.stop();
      await served?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('writes, zeroes and trims what a local file gets from the same requests', async () => {
      await qemuIo(model, SCRIPT);
      await qemuIo(through, SCRIPT);
      // What reached the server, and what the node reads back, are the model's bytes.
      await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, served.server.uri]);
      await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, through]);
      if (served.image) await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', model, served.image]);
    });

    it('reads unaligned ranges and patterns back', async () => {
      const out = await qemuIo(through, ['read -P 0x22 1000 3000', 'read -P 0x11 4000 61536', 'read -P 0x33 1M 1M', 'read -P 0 3584k 256k', 'read -P 0x55 7340544 1536'], true);
      expect(out).not.toMatch(/fail|mismatch/i);
    });

    it('reports the block status the server reports', async () => {
      const [direct, viaNode] = await Promise.all([dataRuns(served.server.uri), dataRuns(through)]);
      expect(viaNode).toEqual(direct);
      // The zeroed-with-unmap range is a hole wherever the server can make one.
      if (backend.name !== 'nbdkit file') expect(direct.some(([off, len, data]) => !data && off <= 4 << 20 && off + len >= 5 << 20)).toBe(true);
    });
  });
}

describe.skipIf(!toolAvailable('qemu-nbd') || !toolAvailable('qemu-io'))('an nbd node moved to an iothread', () => {
  let dir: string;
  let server: NbdServer;
  let qbd: ClientDaemon;
  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-iothread-');
    const image = path.join(dir, 'disk.raw');
    sparseFile(image, SIZE);
    await qemuIo(image, ['write -P 0x61 64k 64k']);
    server = await startQemuNbd(image, { socket: path.join(dir, 'disk.sock') });
    qbd = await startClientDaemon('qbd', ['--object', 'iothread,id=io0']);
  });
  afterAll(async () => {
    await qbd?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('connects again from its new I/O context', async () => {
    await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'moved', server: server.address, export: 'exp' });
    await qbd.qmp.cmd('x-blockdev-set-iothread', { 'node-name': 'moved', iothread: 'io0' });
    await qbd.qmp.cmd('block-export-add', { type: 'nbd', id: 'em', 'node-name': 'moved', name: 'moved', writable: true, iothread: 'io0' });
    const uri = `nbd+unix:///moved?socket=${qbd.socket}`;
    const out = await qemuIo(uri, ['read -P 0x61 64k 64k', 'write -P 0x62 0 4k', 'read -P 0x62 0 4k']);
    expect(out).not.toMatch(/fail|mismatch/i);
  });
});

describe.skipIf(!toolAvailable('qemu-nbd') || !toolAvailable('qemu-io'))('an nbd node on a read-only export', () => {
  let dir: string;
  let server: NbdServer;
  let qbd: ClientDaemon;
  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-ro-');
    const image = path.join(dir, 'ro.raw');
    sparseFile(image, SIZE);
    await qemuIo(image, ['write -P 0x66 0 1M']);
    server = await startQemuNbd(image, { socket: path.join(dir, 'ro.sock') }, { readOnly: true });
    qbd = await startClientDaemon('qbd');
  });
  afterAll(async () => {
    await qbd?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is a read-only node with auto-read-only, readable through a re-export', async () => {
    await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'ro', server: server.address, export: 'exp', 'auto-read-only': true });
    const nodes = await qbd.qmp.cmd('query-named-block-nodes');
    expect(nodes[0].ro).toBe(true);
    await qbd.qmp.cmd('block-export-add', { type: 'nbd', id: 'ero', 'node-name': 'ro', name: 'ro' });
    const out = await qemuIo(`nbd+unix:///ro?socket=${qbd.socket}`, ['read -P 0x66 0 1M'], true);
    expect(out).not.toMatch(/fail|mismatch/i);
    const writable = await qbd.qmp.execute('block-export-add', { type: 'nbd', id: 'erw', 'node-name': 'ro', name: 'rw', writable: true });
    expect(writable.error?.class).toBe('GenericError');
  });
});
