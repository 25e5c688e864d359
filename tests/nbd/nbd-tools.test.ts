/**
 * qbd's NBD exports read and written by real clients: nbdinfo, nbdcopy,
 * qemu-img, qemu-io and libnbd's Python module; what nbdinfo sees is
 * compared with the reference's export of the same image.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolAvailable } from '../helpers/tools';
import { PYTHON, run, startNbdDaemon, type NbdDaemon } from './support/nbd-daemon';

const EXPORTS = [
  'type=nbd,id=e0,node-name=disk,name=disk,writable=on,description=the disk',
  'type=nbd,id=e1,node-name=disk,name=ro,allocation-depth=on',
];

/** nbdinfo's JSON with what differs between two daemons (socket paths) taken out. */
async function nbdinfoJson(d: NbdDaemon, args: string[]): Promise<unknown> {
  const out = await run('nbdinfo', ['--json', ...args]);
  return JSON.parse(out.split(d.socket).join('$SOCKET'));
}

async function writeData(d: NbdDaemon): Promise<void> {
  // 64 KiB of data at 1 MiB, the rest a hole.
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 1M 64k', d.uri('disk')]);
}

describe.skipIf(!toolAvailable('nbdinfo') || !toolAvailable('qemu-storage-daemon'))('nbdinfo on qbd and on the reference', () => {
  let ours: NbdDaemon;
  let theirs: NbdDaemon;
  beforeAll(async () => {
    [ours, theirs] = await Promise.all([startNbdDaemon('qbd', { exports: EXPORTS }), startNbdDaemon('qsd', { exports: EXPORTS })]);
    await Promise.all([writeData(ours), writeData(theirs)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([ours?.stop(), theirs?.stop()]);
  });

  it('lists the same exports, sizes, flags, block sizes and contexts', async () => {
    const [a, b] = await Promise.all([nbdinfoJson(ours, ['--list', `nbd+unix://?socket=${ours.socket}`]), nbdinfoJson(theirs, ['--list', `nbd+unix://?socket=${theirs.socket}`])]);
    expect(a).toEqual(b);
    expect(JSON.stringify(a)).toContain('qemu:allocation-depth');
  });

  it('maps base:allocation with the same data and hole extents', async () => {
    const [a, b] = await Promise.all([nbdinfoJson(ours, ['--map', ours.uri('ro')]), nbdinfoJson(theirs, ['--map', theirs.uri('ro')])]);
    expect(a).toEqual(b);
    expect(a).toEqual([
      { offset: 0, length: 1 << 20, type: 3, description: 'hole,zero' },
      { offset: 1 << 20, length: 65536, type: 0, description: 'data' },
      { offset: (1 << 20) + 65536, length: (3 << 20) - 65536, type: 3, description: 'hole,zero' },
    ]);
  });

  it('maps qemu:allocation-depth as the reference does', async () => {
    const [a, b] = await Promise.all([
      nbdinfoJson(ours, ['--map=qemu:allocation-depth', ours.uri('ro')]),
      nbdinfoJson(theirs, ['--map=qemu:allocation-depth', theirs.uri('ro')]),
    ]);
    expect(a).toEqual(b);
  });
});

describe.skipIf(!toolAvailable('nbdinfo') || !toolAvailable('qemu-storage-daemon') || !toolAvailable('qemu-img'))('qemu:allocation-depth over a backing chain', () => {
  let ours: NbdDaemon;
  let theirs: NbdDaemon;
  let images: string;
  beforeAll(async () => {
    // base ← mid ← top, each with 64 KiB of its own: at 0, 1 MiB and 2 MiB.
    images = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-depth-'));
    let backing: string | undefined;
    for (const [i, name] of ['base', 'mid', 'top'].entries()) {
      const file = path.join(images, `${name}.qcow2`);
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, '4M']);
      await run('qemu-io', ['-f', 'qcow2', '-c', `write -P ${i + 1} ${i}M 64k`, file]);
      backing = file;
    }
    const opts = {
      before: ['--blockdev', `driver=file,node-name=top-file,read-only=on,filename=${backing}`, '--blockdev', 'driver=qcow2,node-name=top,read-only=on,file=top-file'],
      exports: ['type=nbd,id=e0,node-name=top,name=chain,allocation-depth=on'],
    };
    [ours, theirs] = await Promise.all([startNbdDaemon('qbd', opts), startNbdDaemon('qsd', opts)]);
  }, 30_000);
  afterAll(async () => {
    await Promise.all([ours?.stop(), theirs?.stop()]);
    if (images) fs.rmSync(images, { recursive: true, force: true });
  });

  it('reports the depth of the layer that holds the data, as the reference does', async () => {
    const [a, b] = await Promise.all([
      nbdinfoJson(ours, ['--map=qemu:allocation-depth', ours.uri('chain')]),
      nbdinfoJson(theirs, ['--map=qemu:allocation-depth', theirs.uri('chain')]),
    ]);
    expect(a).toEqual(b);
    const depthAt = (offset: number) => (a as Array<{ offset: number; length: number; type: number }>).find((e) => e.offset <= offset && offset < e.offset + e.length)?.type;
    expect([depthAt(0), depthAt(1 << 20), depthAt(2 << 20), depthAt(3 << 20)]).toEqual([3, 2, 1, 0]);
  });
});

describe.skipIf(!toolAvailable('nbdcopy') || !toolAvailable('qemu-img') || !toolAvailable('qemu-io'))('clients reading and writing through qbd exports', () => {
  let d: NbdDaemon;
  let source: string;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', {
      size: 8 << 20,
      before: ['--object', 'iothread,id=io0', '--blockdev', 'driver=null-co,node-name=nul,size=8388608'],
      exports: ['type=nbd,id=e0,node-name=disk,name=disk,writable=on', 'type=nbd,id=e1,node-name=nul,name=io,iothread=io0,fixed-iothread=on,writable=on'],
    });
    source = path.join(d.dir, 'source.bin');
    const data = crypto.randomBytes(8 << 20);
    data.fill(0, 2 << 20, 4 << 20);
    fs.writeFileSync(source, data);
  }, 30_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('copies a file into a writable export with nbdcopy and back out unchanged', async () => {
    await run('nbdcopy', [source, d.uri('disk')]);
    const back = path.join(d.dir, 'back.bin');
    await run('nbdcopy', [d.uri('disk'), back]);
    expect(fs.readFileSync(back).equals(fs.readFileSync(source))).toBe(true);
    // The image itself holds the data once the export flushed it.
    expect(fs.readFileSync(d.image).equals(fs.readFileSync(source))).toBe(true);
  });

  it('compares equal with qemu-img and converts out with qemu-img', async () => {
    await run('nbdcopy', [source, d.uri('disk')]);
    expect(await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, d.uri('disk')])).toContain('Images are identical');
    const out = path.join(d.dir, 'converted.raw');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', d.uri('disk'), out]);
    expect(fs.readFileSync(out).equals(fs.readFileSync(source))).toBe(true);
  });

  it('writes, zeroes and reads back patterns with qemu-io', async () => {
    const out = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 512k 64k', '-c', 'write -z 544k 4k', '-c', 'read -P 0x5a 512k 32k', '-c', 'read -P 0 544k 4k', '-c', 'read -P 0x5a 548k 12k', '-c', 'flush', d.uri('disk')]);
    expect(out).not.toMatch(/fail|error|mismatch/i);
    const image = fs.readFileSync(d.image);
    expect(image.subarray(544 << 10, 548 << 10).every((b) => b === 0)).toBe(true);
    expect(image[512 << 10]).toBe(0x5a);
  });

  it('makes a write on one connection visible on another after a flush on a third (multi-conn)', async () => {
    expect((await run(PYTHON, [path.join(__dirname, 'support', 'multiconn.py'), d.uri('disk')])).trim()).toBe('ok');
  });

  it('serves an export whose node lives in an iothread', async () => {
    const info = JSON.parse(await run('nbdinfo', ['--json', d.uri('io')]));
    expect(info.exports[0]['export-size']).toBe(8 << 20);
    const out = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 64k', '-c', 'read -P 0 0 64k', d.uri('io')]);
    // A null node drops writes and reads zeros: the request went all the way to it.
    expect(out).not.toMatch(/fail|error|mismatch/i);
  });

  it('answers QMP while nbdcopy moves data', async () => {
    const c = await d.daemon.client();
    const copy = run('nbdcopy', [source, d.uri('disk')]);
    const started = Date.now();
    const exportsNow = await c.cmd('query-block-exports');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(exportsNow).toHaveLength(2);
    await copy;
    c.close();
  });
});
