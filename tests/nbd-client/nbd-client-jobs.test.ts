/**
 * The nbd node as a full node of the graph: a mirror target and source
 * (holes stay holes both ways), a backup source, a backing file, and the
 * link between two daemons on two loopback addresses.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import type { QmpTestClient } from '../helpers/qmp-client';
import { toolAvailable } from '../helpers/tools';
import { run } from '../nbd/support/nbd-daemon';
import { startClientDaemon, type ClientDaemon } from './support/client-daemon';
import { freePort, sparseFile, startQemuNbd, type NbdServer } from './support/servers';

const MiB = 1 << 20;
const SIZE = 8 * MiB;
/** Where the source has data; everything else is a hole. */
const DATA: Array<[number, number]> = [
  [1 * MiB, 1 * MiB],
  [5 * MiB, MiB / 2],
];

/** Allocated [offset, length] runs of an image, as qemu-img map reports them (adjacent runs merged). */
async function allocated(image: string, format: 'raw' | 'qcow2'): Promise<Array<[number, number]>> {
  const map = JSON.parse(await run('qemu-img', ['map', '-U', '--output=json', '-f', format, image])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const runs: Array<[number, number]> = [];
  for (const e of map) {
    if (!e.data || e.zero) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === e.start) last[1] += e.length;
    else runs.push([e.start, e.length]);
  }
  return runs;
}

async function compare(a: string, fa: string, b: string, fb: string): Promise<void> {
  await run('qemu-img', ['compare', '-U', '-f', fa, '-F', fb, a, b]);
}

async function runJob(qmp: QmpTestClient, command: string, args: Record<string, unknown>, mirror: boolean): Promise<void> {
  await qmp.cmd(command, args);
  if (mirror) {
    await qmp.waitEvent('BLOCK_JOB_READY', 60_000);
    await qmp.cmd('block-job-complete', { device: args['job-id'] });
  }
  const done = await qmp.waitEvent('BLOCK_JOB_COMPLETED', 60_000);
  expect(done.data.error).toBeUndefined();
}

describe.skipIf(!toolAvailable('qemu-nbd') || !toolAvailable('qemu-img') || !toolAvailable('qemu-io'))('an nbd node in block jobs', () => {
  let dir: string;
  let server: NbdServer;
  let served: string;
  let qbd: ClientDaemon;
  const file = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-jobs-');
    served = file('served.raw');
    sparseFile(served, SIZE);
    server = await startQemuNbd(served, { socket: file('remote.sock') });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file('src.qcow2'), String(SIZE)]);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file('back.qcow2'), String(SIZE)]);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', file('overlay.qcow2'), String(SIZE)]);
    await run('qemu-io', ['-f', 'qcow2', ...DATA.flatMap(([o, l], i) => ['-c', `write -P ${0x31 + i} ${o} ${l}`]), file('src.qcow2')]);
    qbd = await startClientDaemon('qbd');
    const q = qbd.qmp;
    await q.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'remote', discard: 'unmap', server: server.address, export: 'exp' });
    await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: file('src.qcow2') } });
    await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'back', file: { driver: 'file', filename: file('back.qcow2') } });
  }, 60_000);

  afterAll(async () => {
    await qbd?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('mirrors a local qcow2 to the remote export, holes staying holes', async () => {
    await runJob(qbd.qmp, 'blockdev-mirror', { 'job-id': 'out', device: 'src', target: 'remote', sync: 'full' }, true);
    await compare(file('src.qcow2'), 'qcow2', served, 'raw');
    expect(await allocated(served, 'raw')).toEqual(DATA);
  });

  it('mirrors the remote export back into a fresh qcow2, allocating only the data', async () => {
    await runJob(qbd.qmp, 'blockdev-mirror', { 'job-id': 'in', device: 'remote', target: 'back', sync: 'full' }, true);
    await compare(file('src.qcow2'), 'qcow2', file('back.qcow2'), 'qcow2');
    expect(await allocated(file('back.qcow2'), 'qcow2')).toEqual(DATA);
  });

  it('backs the remote export up into a local raw file', async () => {
    sparseFile(file('backup.raw'), SIZE);
    await qbd.qmp.cmd('blockdev-add', { driver: 'raw', 'node-name': 'bk', file: { driver: 'file', filename: file('backup.raw') } });
    await runJob(qbd.qmp, 'blockdev-backup', { 'job-id': 'bk', device: 'remote', target: 'bk', sync: 'full' }, false);
    await compare(served, 'raw', file('backup.raw'), 'raw');
  });

  it('serves as the backing file of a local overlay', async () => {
    await qbd.qmp.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'ov', file: { driver: 'file', filename: file('overlay.qcow2') }, backing: 'remote' });
    const uri = await qbd.reexport('ov');
    await compare(served, 'raw', uri, 'raw');
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', uri]);
    const out = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x77 0 64k', '-c', `read -P 0x31 ${MiB} ${MiB}`, uri]);
    expect(out).not.toMatch(/fail|mismatch/i);
    // The write went to the overlay, not to the remote export.
    expect(await allocated(served, 'raw')).toEqual(DATA);
  });
});

describe.skipIf(!toolAvailable('qemu-img') || !toolAvailable('qemu-io'))('two daemons on two loopback addresses', () => {
  let dir: string;
  const daemons: RunningDaemon[] = [];
  beforeAll(() => {
    dir = tempDir('qbd-nbdc-hosts-');
  });
  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('moves a disk from one to the other with blockdev-mirror over NBD', async () => {
    const a = path.join(dir, 'a.raw');
    const b = path.join(dir, 'b.raw');
    sparseFile(a, SIZE);
    sparseFile(b, SIZE);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 3M', '-c', 'write -P 0xa5 6M 1M', a]);
    const [portA, portB] = [await freePort('127.0.0.1'), await freePort('127.0.0.2')];
    const hostA = await startDaemon('qbd', ['--blockdev', `driver=file,filename=${a},node-name=disk`, '--nbd-server', `addr.type=inet,addr.host=127.0.0.1,addr.port=${portA}`, '--export', 'type=nbd,id=e0,node-name=disk,name=disk'], { dir: tempDir('qbd-host-a-') });
    daemons.push(hostA);
    const hostB = await startDaemon('qbd', ['--blockdev', `driver=file,filename=${b},node-name=disk`, '--nbd-server', `addr.type=inet,addr.host=127.0.0.2,addr.port=${portB}`, '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on'], { dir: tempDir('qbd-host-b-') });
    daemons.push(hostB);
    const qa = await hostA.client();
    await qa.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'peer', server: { type: 'inet', host: '127.0.0.2', port: String(portB) }, export: 'disk' });
    await runJob(qa, 'blockdev-mirror', { 'job-id': 'move', device: 'disk', target: 'peer', sync: 'full' }, true);
    // B's export, read from A's side of the link, and B's file all hold A's data.
    await compare(a, 'raw', `nbd://127.0.0.2:${portB}/disk`, 'raw');
    await compare(a, 'raw', b, 'raw');
    const nodes = (await qa.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; file: string }>;
    expect(nodes.find((n) => n['node-name'] === 'peer')?.file).toBe(`nbd://127.0.0.2:${portB}/disk`);
    qa.close();
  });
});
