/**
 * Reconnection: the server of an nbd node is killed while a client writes
 * through the node. Back within reconnect-delay, the writes carry on and
 * every acknowledged one is in the image; gone for good, requests fail with
 * EIO once the delay has passed, and the daemon goes on serving.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, waitFor } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { PYTHON } from '../nbd/support/nbd-daemon';
import { startClientDaemon, type ClientDaemon } from './support/client-daemon';
import { sparseFile, startQemuNbd, type NbdServer } from './support/servers';

const WRITER = path.join(__dirname, 'support', 'writer.py');
const SIZE = 16 << 20;
const COUNT = 120;

/** The bytes writer.py put in block i. */
const fillOf = (i: number): number => (i % 250) + 1;

/** qemu-io's output, whether or not a command failed (it exits non-zero when one did). */
function qemuIo(uri: string, commands: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri], { timeout: 60_000 }, (_err, stdout, stderr) => resolve(stdout + stderr));
  });
}

function pythonHasNbd(): boolean {
  try {
    execFileSync(PYTHON, ['-c', 'import nbd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('python3 with the nbd module (python3-libnbd) is required in CI');
    return false;
  }
}

describe.skipIf(!toolAvailable('qemu-nbd') || !toolAvailable('qemu-io') || !pythonHasNbd())('an nbd node across server restarts', () => {
  let dir: string;
  let image: string;
  let server: NbdServer | undefined;
  let qbd: ClientDaemon;
  const sock = (): string => path.join(dir, 'server.sock');

  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-reconnect-');
    image = path.join(dir, 'served.raw');
    sparseFile(image, SIZE);
    server = await startQemuNbd(image, { socket: sock() });
    qbd = await startClientDaemon('qbd');
  });
  afterAll(async () => {
    await qbd?.stop();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loses no acknowledged write when the server comes back within reconnect-delay', async () => {
    await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'r', server: { type: 'unix', path: sock() }, export: 'exp', 'reconnect-delay': 30 });
    const uri = await qbd.reexport('r');
    const writer = spawn(PYTHON, [WRITER, uri, String(COUNT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    writer.stdout.on('data', (d) => (out += d));
    writer.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    const acked = (): number => out.split('\n').filter((l) => l.startsWith('ack ')).length;

    // Crash the server in the middle of the writes, and bring it back a moment later.
    await waitFor(() => acked() >= 20 || writer.exitCode !== null, 30_000, 'writes before the crash');
    await server!.kill();
    const before = acked();
    await new Promise((r) => setTimeout(r, 1500));
    server = await startQemuNbd(image, { socket: sock() });

    expect(await exited, err).toBe(0);
    expect(out).toContain('done');
    expect(before).toBeLessThan(COUNT);
    const data = fs.readFileSync(image);
    for (let i = 0; i < COUNT; i++) {
      const block = data.subarray(i * 65536, (i + 1) * 65536);
      expect(block.every((b) => b === fillOf(i)), `block ${i}`).toBe(true);
    }
    await qbd.qmp.cmd('block-export-del', { id: 'e-r' });
    await qbd.qmp.waitEvent('BLOCK_EXPORT_DELETED');
    await qbd.qmp.cmd('blockdev-del', { 'node-name': 'r' });
  });

  it('fails requests with EIO when the server does not come back, and keeps serving', async () => {
    await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'gone', server: { type: 'unix', path: sock() }, export: 'exp', 'reconnect-delay': 1 });
    const uri = await qbd.reexport('gone');
    expect(await qemuIo(uri, ['write -P 0x42 0 64k'])).not.toMatch(/failed/);
    await server!.kill();
    server = undefined;
    const out = await qemuIo(uri, ['write -P 0x43 0 64k', 'read 0 64k']);
    expect(out).toMatch(/write failed: Input\/output error/);
    expect(out).toMatch(/read failed: Input\/output error/);
    // The monitor still answers, and the node can be removed.
    expect((await qbd.qmp.cmd('query-named-block-nodes')).some((n: { 'node-name': string }) => n['node-name'] === 'gone')).toBe(true);
    await qbd.qmp.cmd('block-export-del', { id: 'e-gone' });
    await qbd.qmp.waitEvent('BLOCK_EXPORT_DELETED');
    await qbd.qmp.cmd('blockdev-del', { 'node-name': 'gone' });
  });

  it('without reconnect-delay, fails while the server is away and reconnects on the next request', async () => {
    server = await startQemuNbd(image, { socket: sock() });
    await qbd.qmp.cmd('blockdev-add', { driver: 'nbd', 'node-name': 'nodelay', server: { type: 'unix', path: sock() }, export: 'exp' });
    const uri = await qbd.reexport('nodelay');
    await server.kill();
    expect(await qemuIo(uri, ['write -P 0x44 0 64k'])).toMatch(/write failed: Input\/output error/);
    server = await startQemuNbd(image, { socket: sock() });
    const out = await qemuIo(uri, ['write -P 0x45 0 64k', 'read -P 0x45 0 64k']);
    expect(out).not.toMatch(/failed|mismatch/);
  });

  it('with open-timeout, waits at blockdev-add for a server that is not up yet', async () => {
    await server?.stop();
    server = undefined;
    fs.rmSync(sock(), { force: true });
    const adding = qbd.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'late', server: { type: 'unix', path: sock() }, export: 'exp', 'open-timeout': 30 });
    await new Promise((r) => setTimeout(r, 1500));
    server = await startQemuNbd(image, { socket: sock() });
    expect(await adding).toEqual({ return: {} });
    const uri = await qbd.reexport('late');
    expect(await qemuIo(uri, ['read -P 0x45 0 64k'])).not.toMatch(/failed|mismatch/);
  });
});
