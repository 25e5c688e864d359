/**
 * Image locking: qbd and QEMU's tools see each other's use of an image
 * exactly as two QEMU processes would. Each case runs against qbd and
 * against qemu-storage-daemon, and the outcomes must match.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startDaemon, tempDir, type Flavour } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

function tool(cmd: string, args: string[]): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.split('\n')[0]!.replace(/\/tmp\/[^ \]']+\//g, 'DIR/') };
}

function qcow2Image(dir: string): string {
  const img = path.join(dir, 'img.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
  return img;
}

/** What QEMU's tools see while the daemon holds a writable qcow2 node, and after it lets go. */
async function toolsAgainstDaemon(flavour: Flavour, locking?: string): Promise<unknown> {
  const dir = tempDir(`qbd-locks-${flavour}-`);
  const img = qcow2Image(dir);
  const file = `driver=file,node-name=f,filename=${img}${locking ? `,locking=${locking}` : ''}`;
  const d = await startDaemon(flavour, ['--blockdev', file, '--blockdev', 'driver=qcow2,node-name=q,file=f'], { dir });
  try {
    const held = {
      info: tool('qemu-img', ['info', img]),
      infoForceShare: tool('qemu-img', ['info', '-U', img]).status,
      write: tool('qemu-io', ['-f', 'qcow2', '-c', 'write 0 512', img]),
    };
    const c = await d.client();
    await c.cmd('blockdev-del', { 'node-name': 'q' });
    await c.cmd('blockdev-del', { 'node-name': 'f' });
    c.close();
    return { held, released: tool('qemu-img', ['info', img]).status };
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** What the daemon answers when qemu-io already has the image open for writing. */
async function daemonAgainstTool(flavour: Flavour): Promise<unknown> {
  const dir = tempDir(`qbd-locks2-${flavour}-`);
  const img = qcow2Image(dir);
  const holder = spawn('qemu-io', ['-f', 'qcow2', '-c', 'sleep 20000', img], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const d = await startDaemon(flavour, [], { dir });
    try {
      const c = await d.client();
      const refused = await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', filename: img } });
      const readOnly = await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'r', 'read-only': true, 'force-share': true, file: { driver: 'file', filename: img, 'read-only': true, 'force-share': true } });
      c.close();
      return { refused, readOnly };
    } finally {
      await d.stop();
    }
  } finally {
    holder.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!toolAvailable('qemu-storage-daemon') || !toolAvailable('qemu-img') || !toolAvailable('qemu-io'))('image locks', () => {
  it('stop qemu-img and qemu-io while the daemon holds an image, as qemu-storage-daemon does', async () => {
    const ours = await toolsAgainstDaemon('qbd');
    const theirs = await toolsAgainstDaemon('qsd');
    expect(ours).toEqual(theirs);
    expect(ours).toMatchObject({ held: { info: { status: 1 }, infoForceShare: 0, write: { status: 1 } }, released: 0 });
    expect(JSON.stringify(ours)).toContain('Failed to get shared \\"write\\" lock');
  });

  it('are not taken with locking=off', async () => {
    expect(await toolsAgainstDaemon('qbd', 'off')).toEqual(await toolsAgainstDaemon('qsd', 'off'));
  });

  it('make the daemon refuse an image another process writes, with the reference\'s error', async () => {
    const ours = await daemonAgainstTool('qbd');
    expect(ours).toEqual(await daemonAgainstTool('qsd'));
    expect(ours).toMatchObject({ refused: { error: { class: 'GenericError', desc: 'Failed to get "write" lock' } }, readOnly: { return: {} } });
  });
});
