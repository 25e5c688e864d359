/**
 * FUSE exports seen by ordinary tools: dd, cmp, truncate, fallocate, chmod,
 * stat, lseek and qemu-img work on the mounted file, and every command
 * gives the same output and exit status with qbd as with
 * qemu-storage-daemon. The data written through the mount is checked in
 * the image behind it, and removal leaves the mountpoint a plain file.
 */
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { fuseMountable } from '../helpers/fuse';
import { toolAvailable } from '../helpers/tools';

const MiB = 1024 * 1024;

/** One shell command's outcome, with the test directory's path replaced. */
interface Outcome {
  cmd: string;
  status: number | null;
  stdout: string;
  stderr: string;
}

function sh(dir: string, cmd: string): Outcome {
  const r = spawnSync('sh', ['-c', cmd.split('$DIR').join(dir)], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
  const clean = (s: string) => s.split(dir).join('$DIR');
  return { cmd, status: r.status, stdout: clean(r.stdout), stderr: clean(r.stderr) };
}

const SEEKS = `python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
for off in (0, 65536, 196608, 458752, size - 1, size, size + 1):
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try: print(off, whence, os.lseek(fd, off, whence))
        except OSError as e: print(off, whence, e.strerror)
' $DIR/rw`;

/** The same commands for both daemons: each line's output and status are compared. */
const COMMANDS = [
  "stat -c '%n %s %b %o %a %u %g %h %i %F' $DIR/rw $DIR/ro $DIR/gr",
  "grep -c ' $DIR/' /proc/self/mounts",
  'dd if=$DIR/pattern of=$DIR/rw bs=64k seek=3 conv=notrunc,fsync status=none',
  'dd if=$DIR/rw bs=64k skip=3 count=4 status=none | cmp - $DIR/pattern',
  'qemu-img compare -f raw -F raw $DIR/rw $DIR/disk.raw',
  'qemu-img info --output=json $DIR/rw',
  SEEKS,
  'dd if=/dev/zero of=$DIR/ro bs=512 count=1 conv=notrunc status=none',
  'truncate -s 2M $DIR/ro',
  'chmod 644 $DIR/ro',
  'chmod 444 $DIR/ro',
  "stat -c '%a' $DIR/ro",
  'fallocate -l 4096 -o 8M $DIR/ro',
  'dd if=$DIR/ro bs=1M status=none | cmp - $DIR/ro.raw',
  'touch $DIR/rw',
  'chmod 640 $DIR/rw',
  "stat -c '%a %s' $DIR/rw",
  'dd if=/dev/zero of=$DIR/rw bs=512 seek=8192 count=1 conv=notrunc status=none',
  'dd if=$DIR/rw bs=512 skip=8192 count=1 status=none | wc -c',
  'dd if=/dev/zero of=$DIR/rw bs=1024 seek=4194304 oflag=seek_bytes count=1 conv=notrunc status=none; echo $?',
  'truncate -s 8M $DIR/rw',
  "stat -c '%s' $DIR/rw $DIR/disk.raw",
  'fallocate -p -o 0 -l 64k $DIR/rw',
  'fallocate -z -o 64k -l 64k $DIR/rw',
  'fallocate -o 1M -l 1M $DIR/rw',
  'fallocate -o 8M -l 1M $DIR/rw',
  "stat -c '%s' $DIR/rw $DIR/disk.raw",
  'dd if=$DIR/pattern of=$DIR/gr bs=64k seek=20 conv=notrunc status=none',
  "stat -c '%s' $DIR/gr $DIR/g.raw",
  'dd if=$DIR/gr bs=64k skip=20 status=none | cmp - $DIR/pattern',
  'truncate -s 100k $DIR/gr',
  "stat -c '%s' $DIR/gr $DIR/g.raw",
  'stat -f -c "%b %f %a %c %d %l %s %S" $DIR/rw',
  'sync $DIR/rw',
  // Unmounted by hand, the export stays until deleted (and deleting it still works).
  'umount $DIR/gr',
  "grep -c ' $DIR/' /proc/self/mounts",
];

async function transcript(flavour: 'qbd' | 'qsd', pattern: Buffer): Promise<{ outcomes: Outcome[]; image: Buffer; growable: Buffer; after: Outcome[] }> {
  const dir = tempDir(`qbd-fuse-tools-${flavour}-`);
  fs.writeFileSync(path.join(dir, 'pattern'), pattern);
  for (const [name, size] of [['disk.raw', 4 * MiB], ['g.raw', MiB]] as const) {
    fs.writeFileSync(path.join(dir, name), '');
    fs.truncateSync(path.join(dir, name), size);
  }
  fs.writeFileSync(path.join(dir, 'ro.raw'), crypto.randomBytes(MiB));
  for (const m of ['rw', 'ro', 'gr']) fs.writeFileSync(path.join(dir, m), '');
  let daemon: RunningDaemon | undefined;
  try {
    daemon = await startDaemon(
      flavour,
      [
        '--blockdev', `driver=file,node-name=disk,filename=${dir}/disk.raw`,
        '--blockdev', `driver=file,node-name=ro,filename=${dir}/ro.raw,read-only=on`,
        '--blockdev', `driver=file,node-name=g,filename=${dir}/g.raw`,
        '--export', `type=fuse,id=rw,node-name=disk,mountpoint=${dir}/rw,writable=on`,
        '--export', `type=fuse,id=ro,node-name=ro,mountpoint=${dir}/ro`,
        '--export', `type=fuse,id=gr,node-name=g,mountpoint=${dir}/gr,writable=on,growable=on`,
      ],
      { dir },
    );
    const outcomes = COMMANDS.map((cmd) => sh(dir, cmd));
    const c = await daemon.client();
    for (const id of ['rw', 'ro', 'gr']) await c.cmd('block-export-del', { id });
    c.close();
    const after = [sh(dir, "stat -c '%n %s %a' $DIR/rw $DIR/ro $DIR/gr"), sh(dir, "grep -c ' $DIR/' /proc/self/mounts")];
    return { outcomes, image: fs.readFileSync(path.join(dir, 'disk.raw')), growable: fs.readFileSync(path.join(dir, 'g.raw')), after };
  } finally {
    await daemon?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!toolAvailable('qemu-storage-daemon') || !toolAvailable('qemu-img') || !toolAvailable('python3') || !fuseMountable())('a FUSE export under ordinary tools', () => {
  it('behaves as the reference for dd, cmp, qemu-img, lseek, truncate, fallocate, chmod and stat, and removal unmounts', async () => {
    const pattern = crypto.randomBytes(256 * 1024);
    const ours = await transcript('qbd', pattern);
    const theirs = await transcript('qsd', pattern);
    if (process.env.FUSE_TEST_DUMP) console.log(JSON.stringify(ours.outcomes, null, 1));
    for (let i = 0; i < COMMANDS.length; i++) expect(ours.outcomes[i], COMMANDS[i]).toEqual(theirs.outcomes[i]);
    expect(ours.after).toEqual(theirs.after);

    // What the commands did, checked in the images themselves.
    expect(ours.image.length).toBe(9 * MiB);
    expect(ours.image.subarray(3 * 65536, 3 * 65536 + pattern.length).equals(pattern)).toBe(true);
    expect(ours.image.subarray(0, 128 * 1024).every((b) => b === 0)).toBe(true);
    expect(ours.image.equals(theirs.image)).toBe(true);
    expect(ours.growable.length).toBe(100 * 1024);
    expect(ours.growable.equals(theirs.growable)).toBe(true);
    // The mountpoints are plain empty files again, and nothing is left mounted.
    expect(ours.after[0]!.stdout).toBe('$DIR/rw 0 644\n$DIR/ro 0 644\n$DIR/gr 0 644\n');
    expect(ours.after[1]!.stdout).toBe('0\n');
  }, 120_000);
});

describe.skipIf(!toolAvailable('fio') || !toolAvailable('qemu-img') || !fuseMountable())('a FUSE export under parallel I/O', () => {
  it('keeps every block fio writes with 16 requests in flight, as its verification and the image show', async () => {
    const dir = tempDir('qbd-fuse-fio-');
    const image = path.join(dir, 'disk.raw');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 32 * MiB);
    fs.writeFileSync(path.join(dir, 'mnt'), '');
    const daemon = await startDaemon('qbd', ['--blockdev', `driver=file,node-name=disk,filename=${image}`, '--export', `type=fuse,id=e0,node-name=disk,mountpoint=${dir}/mnt,writable=on`], { dir });
    try {
      const fio = sh(dir, 'fio --name=v --filename=$DIR/mnt --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bsrange=4k-256k --size=32M --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 --output-format=terse');
      expect(fio.stderr).toBe('');
      expect(fio.status).toBe(0);
      // The verification read through the mount; the image file itself must hold the same bytes.
      expect(sh(dir, 'qemu-img compare -f raw -F raw $DIR/mnt $DIR/disk.raw')).toMatchObject({ status: 0, stdout: 'Images are identical.\n' });
      expect(fs.readFileSync(image).some((b) => b !== 0)).toBe(true);
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

describe.skipIf(!fuseMountable())('a FUSE export in an iothread', () => {
  it('is served there, grows its node through the main loop, and the graph shows the new length', async () => {
    const dir = tempDir('qbd-fuse-iothread-');
    const image = path.join(dir, 'disk.raw');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, MiB);
    fs.writeFileSync(path.join(dir, 'mnt'), '');
    const daemon = await startDaemon(
      'qbd',
      [
        '--object', 'iothread,id=io0',
        '--blockdev', `driver=file,node-name=file0,filename=${image}`,
        '--blockdev', 'driver=raw,node-name=disk,file=file0',
        '--export', `type=fuse,id=e0,node-name=disk,mountpoint=${dir}/mnt,writable=on,growable=on,iothread=io0`,
      ],
      { dir },
    );
    try {
      const data = crypto.randomBytes(192 * 1024);
      fs.writeFileSync(path.join(dir, 'data'), data);
      expect(sh(dir, 'dd if=$DIR/data of=$DIR/mnt bs=64k seek=20 conv=notrunc status=none').status).toBe(0);
      const c = await daemon.client();
      const nodes = (await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; image: { 'virtual-size': number } }>;
      expect(Object.fromEntries(nodes.map((n) => [n['node-name'], n.image['virtual-size']]))).toEqual({ disk: 20 * 65536 + data.length, file0: 20 * 65536 + data.length });
      expect(await c.cmd('block-export-del', { id: 'e0' })).toEqual({});
      c.close();
      const onDisk = fs.readFileSync(image);
      expect(onDisk.length).toBe(20 * 65536 + data.length);
      expect(onDisk.subarray(20 * 65536).equals(data)).toBe(true);
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe.skipIf(!toolAvailable('qemu-storage-daemon') || !fuseMountable())('a FUSE export whose image cannot grow', () => {
  it('passes the host error on to the writer as the reference does, and goes on serving', async () => {
    const run = async (flavour: 'qbd' | 'qsd'): Promise<Outcome[]> => {
      const dir = tempDir(`qbd-fuse-efbig-${flavour}-`);
      fs.writeFileSync(path.join(dir, 'disk.raw'), '');
      fs.truncateSync(path.join(dir, 'disk.raw'), MiB);
      fs.writeFileSync(path.join(dir, 'mnt'), '');
      // Files the daemon writes may not pass 2 MiB: growing the image past that fails with EFBIG.
      const daemon = await startDaemon(flavour, ['--blockdev', `driver=file,node-name=disk,filename=${dir}/disk.raw`, '--export', `type=fuse,id=e0,node-name=disk,mountpoint=${dir}/mnt,writable=on,growable=on`], { dir, fileSizeLimitKiB: 2048 });
      try {
        return [
          'dd if=/dev/zero of=$DIR/mnt bs=64k seek=40 count=1 conv=notrunc status=none',
          'truncate -s 4M $DIR/mnt',
          "stat -c '%s' $DIR/mnt",
          'dd if=/dev/zero of=$DIR/mnt bs=64k seek=8 count=1 conv=notrunc,fsync status=none',
          'dd if=$DIR/mnt bs=1M status=none | wc -c',
        ].map((cmd) => sh(dir, cmd));
      } finally {
        await daemon.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    const ours = await run('qbd');
    const theirs = await run('qsd');
    if (process.env.FUSE_TEST_DUMP) console.log(JSON.stringify(ours, null, 1));
    expect(ours).toEqual(theirs);
    expect(ours[1]!.status).not.toBe(0);
    expect(ours[0]!.stderr).toContain('File too large');
    expect(ours[4]!.stdout.trim()).toBe(String(MiB));
  }, 60_000);
});
