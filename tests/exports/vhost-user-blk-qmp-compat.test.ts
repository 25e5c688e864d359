/**
 * vhost-user-blk exports through QMP, in the same session against qbd and
 * qemu-storage-daemon: block-export-add's errors to the letter,
 * query-block-exports, block-export-del and its event; and the same
 * options on the command line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { structuralDiff } from '../helpers/compare';
import { startDaemon, tempDir, type Flavour, type RunningDaemon } from '../helpers/daemons';
import { qmpSession, type QmpSessionResult } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';
import { vhostUserCallsAvailable } from '../../src/native/vhost-user';
import { BlockFrontend } from '../../bench/vhost-user-frontend';

const haveTools = toolAvailable('qemu-storage-daemon');

const STEPS: string[] = [
  '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n","size":67108864}}',
  '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"ro","read-only":true}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"a","node-name":"n","addr":{"type":"unix","path":"$DIR/a.sock"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"a","node-name":"n","addr":{"type":"unix","path":"$DIR/a2.sock"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"logical-block-size":1000}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"logical-block-size":256}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"logical-block-size":4194304}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"logical-block-size":"x"}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"num-queues":0}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"num-queues":70000}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"/nonexistent/dir/b.sock"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"inet","host":"127.0.0.1","port":"0"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"vsock","cid":"3","port":"1"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"fd","str":"3"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n"}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"ro","writable":true,"addr":{"type":"unix","path":"$DIR/b.sock"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"nope","addr":{"type":"unix","path":"$DIR/b.sock"}}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"n","addr":{"type":"unix","path":"$DIR/b.sock"},"bogus":1}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"b","node-name":"ro","addr":{"type":"unix","path":"$DIR/b.sock"},"logical-block-size":4096,"num-queues":4,"writethrough":true}}',
  '{"execute":"block-export-add","arguments":{"type":"vhost-user-blk","id":"c","node-name":"n","writable":true,"addr":{"type":"unix","path":"$DIR/a.sock"}}}',
  '{"execute":"query-block-exports"}',
  '{"execute":"blockdev-del","arguments":{"node-name":"n"}}',
  '{"execute":"block-export-del","arguments":{"id":"a"}}',
  '{"execute":"block-export-del","arguments":{"id":"a"}}',
  '{"execute":"query-block-exports"}',
  '{"execute":"block-export-del","arguments":{"id":"b","mode":"hard"}}',
  '{"execute":"block-export-del","arguments":{"id":"c"}}',
  '{"execute":"query-block-exports"}',
  '{"execute":"blockdev-del","arguments":{"node-name":"n"}}',
];

const running: RunningDaemon[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
});

function session(flavour: Flavour): Promise<QmpSessionResult> {
  return qmpSession(flavour, STEPS, { prefix: 'qbd-vublk-qmp-' });
}

describe.skipIf(!haveTools || !vhostUserCallsAvailable)('vhost-user-blk exports through QMP', () => {
  it('answers block-export-add, query-block-exports and block-export-del as qemu-storage-daemon does', async () => {
    const ours = await session('qbd');
    const theirs = await session('qsd');
    STEPS.forEach((step, i) => {
      expect(structuralDiff(ours.replies[i], theirs.replies[i], '$', true), `${step}\nqbd: ${JSON.stringify(ours.replies[i])}\nqsd: ${JSON.stringify(theirs.replies[i])}`).toEqual([]);
    });
    expect(ours.events).toEqual(theirs.events);
  }, 60_000);

  it('starts an export from --export, and a safe block-export-del disconnects its front-end', async () => {
    const run = async (flavour: Flavour): Promise<unknown[]> => {
      const dir = tempDir(`qbd-vublk-cli-${flavour}-`);
      const sock = path.join(dir, 'vu.sock');
      const daemon = await startDaemon(flavour, ['--blockdev', 'null-co,node-name=n,size=1048576', '--export', `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},num-queues=2,logical-block-size=4096`], { dir });
      running.push(daemon);
      const c = await daemon.client();
      const out: unknown[] = [await c.execute('query-block-exports')];
      const f = await BlockFrontend.open(sock, { queues: 2 });
      out.push((await f.config()).toString('hex'));
      out.push(await c.execute('block-export-del', { id: 'e' }));
      out.push((await c.waitEvent('BLOCK_EXPORT_DELETED')).data);
      out.push(await f.fe.disconnected());
      out.push(await c.execute('block-export-del', { id: 'e' }));
      out.push(await c.execute('query-block-exports'));
      f.close();
      c.close();
      fs.rmSync(dir, { recursive: true, force: true });
      return out;
    };
    expect(await run('qbd')).toEqual(await run('qsd'));
  }, 60_000);
});
