/**
 * Deleting exports and stopping the server while clients are connected, on
 * qbd and on the reference: the same replies, the same events in the same
 * order, and the clients dropped.
 */
import { describe, expect, it } from 'vitest';
import type { Flavour } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { startNbdDaemon } from './support/nbd-daemon';
import { RawClient } from './support/raw-client';

async function connectedClient(socket: string, name: string): Promise<RawClient> {
  const c = await RawClient.connect(socket);
  await c.start();
  const replies = await c.go(name);
  if (replies[replies.length - 1]!.type !== 1) throw new Error(`GO ${name} failed`);
  return c;
}

/** What a QMP session saw: each reply's error text or 'ok', and events interleaved where they came. */
async function scenario(flavour: Flavour): Promise<{ transcript: string[]; dropped: boolean[] }> {
  const d = await startNbdDaemon(flavour, {
    exports: ['type=nbd,id=e0,node-name=disk,name=a', 'type=nbd,id=e1,node-name=disk,name=b,writable=on'],
  });
  try {
    const q = await d.daemon.client();
    const transcript: string[] = [];
    const step = async (command: string, args?: unknown): Promise<void> => {
      const r = await q.execute(command, args);
      transcript.push(`${command}: ${r.error ? r.error.desc : 'ok'}`);
    };
    const a = await connectedClient(d.socket, 'a');
    const b = await connectedClient(d.socket, 'b');
    await step('block-export-del', { id: 'e0' });
    await step('block-export-del', { id: 'e0', mode: 'hard' });
    await q.waitEvent('BLOCK_EXPORT_DELETED');
    transcript.push('event BLOCK_EXPORT_DELETED e0');
    const droppedA = await a.waitClosed();
    const afterDel = await q.cmd('query-block-exports');
    transcript.push(`exports: ${afterDel.map((e: { id: string }) => e.id).join(',')}`);
    await step('nbd-server-stop');
    const ev = await q.waitEvent('BLOCK_EXPORT_DELETED');
    transcript.push(`event BLOCK_EXPORT_DELETED ${ev.data.id}`);
    const droppedB = await b.waitClosed();
    await step('query-block-exports');
    await step('blockdev-del', { 'node-name': 'disk' });
    q.close();
    return { transcript, dropped: [droppedA, droppedB] };
  } finally {
    await d.stop();
  }
}

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('exports with clients connected', () => {
  it('refuses a safe delete, drops clients on a hard delete and on nbd-server-stop, as the reference does', async () => {
    const ours = await scenario('qbd');
    const theirs = await scenario('qsd');
    expect(ours.transcript).toEqual(theirs.transcript);
    expect(ours.transcript).toContain("block-export-del: export 'e0' still in use");
    expect(ours.dropped).toEqual([true, true]);
  }, 30_000);
});
