/**
 * A Linux guest (qemu-system-x86_64, TCG) with a vhost-user-blk disk served
 * by qbd: it reads what the host put on the image, writes a pattern with
 * O_DIRECT, flushes, reads it back; afterwards the image must equal the
 * expected one (qemu-img compare).
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { bootWithVhostUserBlk, busyboxPath, hostKernel, QEMU_SYSTEM, writeInitramfs } from '../../bench/vm';
import { vhostUserCallsAvailable } from '../../src/native/vhost-user';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

function vmAvailable(): boolean {
  if (!toolAvailable(QEMU_SYSTEM) || !toolAvailable('qemu-img') || !toolAvailable('qemu-io')) return false;
  const missing = !hostKernel() ? 'a kernel in /boot' : !busyboxPath() ? 'busybox' : undefined;
  if (missing && process.env.CI) throw new Error(`${missing} is required in CI but is not installed`);
  return missing === undefined;
}

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

const running: RunningDaemon[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
});

describe.skipIf(!vmAvailable() || !vhostUserCallsAvailable)('vhost-user-blk export with a Linux guest', () => {
  it('serves a guest that reads, writes with O_DIRECT, flushes and reads back; the image holds what it wrote', async () => {
    const dir = tempDir('qbd-vublk-vm-');
    const image = path.join(dir, 'disk.raw');
    fs.writeFileSync(image, Buffer.alloc(0));
    fs.truncateSync(image, SIZE);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', image], { stdio: 'ignore' });
    const pattern = randomBytes(2 * MiB);
    const script = [
      'echo "QBDVM size $(cat /sys/block/vda/size) lbs $(cat /sys/block/vda/queue/logical_block_size) ro $(cat /sys/block/vda/ro)"',
      'echo "QBDVM before $(dd if=/dev/vda bs=64k count=16 iflag=direct 2>/dev/null | md5sum)"',
      'dd if=/pattern.bin of=/dev/vda bs=64k seek=32 oflag=direct conv=fsync 2>/dev/null && echo "QBDVM wrote"',
      'echo 3 > /proc/sys/vm/drop_caches',
      'echo "QBDVM after $(dd if=/dev/vda bs=64k skip=32 count=32 iflag=direct 2>/dev/null | md5sum)"',
      'echo "QBDVM id $(cat /sys/block/vda/serial 2>/dev/null)"',
    ].join('\n');
    const initramfs = path.join(dir, 'initramfs.cpio');
    const kernel = hostKernel()!;
    writeInitramfs(initramfs, kernel.modules, script, { 'pattern.bin': pattern });

    const sock = path.join(dir, 'vu.sock');
    const daemon = await startDaemon('qbd', ['--blockdev', `file,filename=${image},node-name=f`, '--blockdev', 'raw,file=f,node-name=n', '--export', `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},writable=on,num-queues=2`], { dir });
    running.push(daemon);
    const console = await bootWithVhostUserBlk(kernel.image, initramfs, sock, { numQueues: 2 });
    const lines = console.split(/\r?\n/).filter((l) => l.startsWith('QBDVM'));
    expect(lines).toEqual([
      `QBDVM size ${SIZE / 512} lbs 512 ro 0`,
      `QBDVM before ${md5(Buffer.alloc(MiB, 0x5a))}  -`,
      'QBDVM wrote',
      `QBDVM after ${md5(pattern)}  -`,
      'QBDVM id vhost_user_blk',
    ]);
    await daemon.stop();

    const expected = path.join(dir, 'expected.raw');
    fs.writeFileSync(expected, Buffer.alloc(0));
    fs.truncateSync(expected, SIZE);
    const fd = fs.openSync(expected, 'r+');
    fs.writeSync(fd, Buffer.alloc(MiB, 0x5a), 0, MiB, 0);
    fs.writeSync(fd, pattern, 0, pattern.length, 2 * MiB);
    fs.closeSync(fd);
    execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, expected]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 300_000);

  it('shows the guest the same read-only disk as the reference: sizes, cache mode, queues, limits and data', async () => {
    const kernel = hostKernel()!;
    const script = [
      'q=/sys/block/vda/queue',
      'echo "QBDVM size $(cat /sys/block/vda/size) ro $(cat /sys/block/vda/ro) queues $(ls /sys/block/vda/mq | wc -l)"',
      'echo "QBDVM blocks $(cat $q/logical_block_size) $(cat $q/physical_block_size) $(cat $q/minimum_io_size) $(cat $q/optimal_io_size)"',
      'echo "QBDVM cache $(cat $q/write_cache) segments $(cat $q/max_segments) $(cat $q/max_segment_size)"',
      'echo "QBDVM discard $(cat $q/discard_granularity) $(cat $q/discard_max_hw_bytes) zeroes $(cat $q/write_zeroes_max_bytes)"',
      'echo "QBDVM data $(dd if=/dev/vda bs=64k count=32 iflag=direct 2>/dev/null | md5sum)"',
      'dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>/dev/null || echo "QBDVM write refused"',
    ].join('\n');
    const look = async (flavour: 'qbd' | 'qsd'): Promise<string[]> => {
      const dir = tempDir(`qbd-vublk-vm-${flavour}-`);
      const image = path.join(dir, 'disk.raw');
      fs.writeFileSync(image, Buffer.alloc(0));
      fs.truncateSync(image, SIZE);
      execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 2M', image], { stdio: 'ignore' });
      const initramfs = path.join(dir, 'initramfs.cpio');
      writeInitramfs(initramfs, kernel.modules, script);
      const sock = path.join(dir, 'vu.sock');
      const daemon = await startDaemon(flavour, ['--blockdev', `file,filename=${image},node-name=f,read-only=on`, '--blockdev', 'raw,file=f,node-name=n,read-only=on', '--export', `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},num-queues=2,logical-block-size=4096`], { dir });
      running.push(daemon);
      const console = await bootWithVhostUserBlk(kernel.image, initramfs, sock, { numQueues: 2 });
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      return console.split(/\r?\n/).filter((l) => l.startsWith('QBDVM'));
    };
    const ours = await look('qbd');
    expect(ours).toContain(`QBDVM data ${md5(Buffer.alloc(2 * MiB, 0x3c))}  -`);
    expect(ours).toContain('QBDVM write refused');
    expect(ours).toEqual(await look('qsd'));
  }, 300_000);
});
