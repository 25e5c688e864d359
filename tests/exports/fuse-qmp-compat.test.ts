/**
 * FUSE exports over QMP, in the same sessions against qbd and
 * qemu-storage-daemon: the replies must match (errors to the letter), and
 * so must query-block-exports, the export's edge in the block graph and the
 * BLOCK_EXPORT_DELETED events.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { structuralDiff } from '../helpers/compare';
import { startDaemon, tempDir, type Flavour } from '../helpers/daemons';
import { fuseMountable } from '../helpers/fuse';
import { qmpSession, type QmpSessionResult } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';

const MiB = 1024 * 1024;

interface Step {
  send: string;
  exact?: boolean;
}

async function session(flavour: Flavour, steps: Step[]): Promise<QmpSessionResult & { mountedAfter: boolean }> {
  let mountedAfter = false;
  const result = await qmpSession(
    flavour,
    steps.map((s) => s.send),
    {
      prefix: 'qbd-fuse-compat-',
      prepare: (dir) => {
        for (const f of ['disk.raw', 'ro.raw']) fs.writeFileSync(path.join(dir, f), Buffer.alloc(1 << 20));
        for (const f of ['mnt', 'mnt2', 'mnt3']) fs.writeFileSync(path.join(dir, f), '');
        fs.mkdirSync(path.join(dir, 'adir'));
      },
      beforeStop: (dir) => {
        mountedAfter = fs.readFileSync('/proc/self/mounts', 'utf8').includes(dir);
      },
    },
  );
  return { ...result, mountedAfter };
}

const add = (args: string): Step => ({ send: `{"execute":"block-export-add","arguments":{"type":"fuse",${args}}}` });

const STEPS: Step[] = [
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","filename":"$DIR/disk.raw","node-name":"f"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","filename":"$DIR/ro.raw","node-name":"ro","read-only":true}}' },
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/missing"'),
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/adir"'),
  add('"id":"e0","node-name":"f","mountpoint":"/dev/null"'),
  add('"id":"e0","node-name":"f","mountpoint":""'),
  add('"id":"e0","node-name":"nope","mountpoint":"$DIR/mnt"'),
  add('"id":"0e","node-name":"f","mountpoint":"$DIR/mnt"'),
  add('"id":"e0","node-name":"f"'),
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/mnt","allow-other":"maybe"'),
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/mnt","growable":"yes"'),
  add('"id":"e0","node-name":"ro","mountpoint":"$DIR/mnt","writable":true'),
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/mnt","writable":true'),
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/mnt2"'),
  add('"id":"e1","node-name":"ro","mountpoint":"$DIR/mnt"'),
  add('"id":"e1","node-name":"ro","mountpoint":"$DIR/mnt2","allow-other":"off"'),
  add('"id":"e2","node-name":"ro","mountpoint":"$DIR/mnt3","growable":true,"allow-other":"on"'),
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"f"}}' },
  // A growable export of a read-only node holds the resize permission; resizing still fails on the image.
  { send: '{"execute":"block_resize","arguments":{"node-name":"ro","size":2097152}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"nope"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e2","mode":"hard"}}' },
  // The mountpoint is free again: exporting there works a second time.
  add('"id":"e0","node-name":"f","mountpoint":"$DIR/mnt","growable":true'),
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"block-export-del","arguments":{"id":"e1"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"f"}}' },
  { send: '{"execute":"query-block-exports"}', exact: true },
];

describe.skipIf(!toolAvailable('qemu-storage-daemon') || !fuseMountable())('FUSE export commands answer like qemu-storage-daemon', () => {
  it('gives the reference replies, graph edges and events for block-export-add/del and query-block-exports', async () => {
    const [ours, theirs] = await Promise.all([session('qbd', STEPS), session('qsd', STEPS)]);
    const diffs = STEPS.flatMap((step, i) => structuralDiff(ours.replies[i], theirs.replies[i], `step ${i} ${step.send}`, step.exact));
    expect(diffs).toEqual([]);
    expect(ours.events).toEqual(theirs.events);
    expect(ours.events).toHaveLength(4);
    expect(ours.mountedAfter).toBe(false);
  }, 60_000);
});

describe('a FUSE export without the native addon', () => {
  it('is refused with a clear error, and the daemon goes on serving', async () => {
    const dir = tempDir('qbd-fuse-noaddon-');
    fs.writeFileSync(path.join(dir, 'mnt'), '');
    const daemon = await startDaemon('qbd', ['--blockdev', 'driver=null-co,node-name=n'], { dir, env: { QBD_NATIVE: 'off' } });
    try {
      const c = await daemon.client();
      const reply = await c.execute('block-export-add', { type: 'fuse', id: 'e0', 'node-name': 'n', mountpoint: path.join(dir, 'mnt') });
      expect(reply.error).toEqual({ class: 'GenericError', desc: 'FUSE exports need the native addon (mount and /dev/fuse access), which is not loaded' });
      expect(await c.cmd('query-block-exports')).toEqual([]);
      // The node is free again: nothing of the failed export holds it.
      expect(await c.cmd('blockdev-del', { 'node-name': 'n' })).toEqual({});
      c.close();
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

describe.skipIf(!fuseMountable())('a FUSE export over an exported file named another way', () => {
  it('mounts over the first instead of hanging (where the reference hangs), and both go away cleanly', async () => {
    const dir = tempDir('qbd-fuse-twice-');
    fs.writeFileSync(path.join(dir, 'mnt'), '');
    const daemon = await startDaemon('qbd', ['--blockdev', 'driver=null-co,node-name=a,size=1048576', '--blockdev', 'driver=null-co,node-name=b,size=2097152'], { dir });
    try {
      const c = await daemon.client();
      await c.cmd('block-export-add', { type: 'fuse', id: 'e0', 'node-name': 'a', mountpoint: path.join(dir, 'mnt') });
      await c.cmd('block-export-add', { type: 'fuse', id: 'e1', 'node-name': 'b', mountpoint: `${dir}/./mnt` });
      // The newer file system is on top.
      expect(fs.statSync(path.join(dir, 'mnt')).size).toBe(2 * MiB);
      await c.cmd('block-export-del', { id: 'e1' });
      expect(fs.statSync(path.join(dir, 'mnt')).size).toBe(MiB);
      await c.cmd('block-export-del', { id: 'e0' });
      expect(fs.statSync(path.join(dir, 'mnt')).size).toBe(0);
      expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(dir);
      c.close();
    } finally {
      await daemon.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
