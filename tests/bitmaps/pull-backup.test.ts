/**
 * Pull-mode incremental backup end to end: at each checkpoint the
 * recording bitmap is disabled and a new one added in one transaction; a
 * fleecing node (copy-before-write with that bitmap, snapshot-access) is
 * exported over NBD with the bitmap; a client (python3 `nbd`) reads only
 * the extents the export's qemu:dirty-bitmap context marks dirty and writes
 * them onto a copy of the previous backup, while writes go on through the
 * filter. A full backup and N incrementals rebuild the disk as it was at
 * each checkpoint (qemu-img compare); run against qbd and the reference.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Json } from '../helpers/compare';
import { prng } from '../helpers/in-process-block';
import { toolAvailable } from '../helpers/tools';
import { PYTHON } from '../nbd/support/nbd-daemon';
import { both, qemuIo, type Session } from './support';

const haveTools = ['qemu-storage-daemon', 'qemu-io', 'qemu-img', 'nbdcopy'].every((t) => toolAvailable(t));

function pythonNbdAvailable(): boolean {
  try {
    execFileSync(PYTHON, ['-c', 'import nbd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('the Python nbd module (python3-libnbd) is required in CI');
    return false;
  }
}
const CLIENT = path.join(__dirname, 'pull-backup-client.py');
const MiB = 1 << 20;
const SIZE = 32 * MiB;
const ROUNDS = 3;

function identical(a: string, b: string): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-q', '-U', '-f', 'raw', '-F', 'raw', a, b]);
    return true;
  } catch {
    return false;
  }
}

/** Random writes of 4 KiB to 256 KiB anywhere on the disk, through export `exportName`. */
function randomWrites(s: Session, exportName: string, seed: number): void {
  const rand = prng(seed);
  const cmds: string[] = [];
  for (let i = 0; i < 12; i++) {
    const len = 4096 * (1 + Math.floor(rand() * 64));
    const off = 4096 * Math.floor(rand() * ((SIZE - len) / 4096));
    cmds.push(`write -P ${1 + Math.floor(rand() * 250)} ${off} ${len}`);
  }
  qemuIo(s, exportName, ...cmds);
}

async function pullBackups(s: Session): Promise<Json> {
  const { c } = s;
  const src = path.join(s.work, 'src.raw');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', src, String(SIZE)]);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 8M', '-c', 'write -P 9 20M 3M', src], { stdio: 'pipe' });
  await c.cmd('blockdev-add', { driver: 'raw', 'node-name': 'src', file: { driver: 'file', filename: src } });
  const results: Json[] = [];
  let previous: string | undefined;
  for (let round = 0; round <= ROUNDS; round++) {
    const bitmap = `b${round}`;
    // The checkpoint: the old bitmap stops recording, the next one starts, atomically.
    const actions: Json[] = [{ type: 'block-dirty-bitmap-add', data: { node: 'src', name: bitmap, granularity: 65536 } }];
    const since = round > 0 ? `b${round - 1}` : undefined;
    if (since) actions.unshift({ type: 'block-dirty-bitmap-disable', data: { node: 'src', name: since } });
    await c.cmd('transaction', { actions });
    const expected = path.join(s.work, `expected${round}.raw`);
    fs.copyFileSync(src, expected);

    const tmp = path.join(s.work, `tmp${round}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', src, '-F', 'raw', tmp]);
    await c.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'tmp', file: { driver: 'file', filename: tmp }, backing: 'src' });
    await c.cmd('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tmp', ...(since ? { bitmap: { node: 'src', name: since } } : {}) });
    await c.cmd('blockdev-add', { driver: 'snapshot-access', 'node-name': 'fleece', file: 'cbw' });
    await c.cmd('block-export-add', { type: 'nbd', id: 'live', 'node-name': 'cbw', writable: true });
    // A bare name is not looked for below snapshot-access: the bitmap is named with its node.
    const bareName = since ? await c.execute('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece', bitmaps: [since] }) : undefined;
    await c.cmd('block-export-add', { type: 'nbd', id: 'fleece', 'node-name': 'fleece', ...(since ? { bitmaps: [{ node: 'src', name: since }] } : {}) });
    // The guest goes on writing while the backup is read.
    randomWrites(s, 'cbw', 100 + round);

    const backup = path.join(s.work, `backup${round}.raw`);
    const uri = `nbd+unix:///fleece?socket=${s.nbd}`;
    let copied = SIZE;
    if (!previous) {
      execFileSync('nbdcopy', [uri, backup]);
    } else {
      fs.copyFileSync(previous, backup);
      copied = Number(execFileSync(PYTHON, [CLIENT, uri, since!, backup], { encoding: 'utf8' }).trim());
    }
    for (const id of ['fleece', 'live']) {
      await c.cmd('block-export-del', { id });
      await c.waitEvent('BLOCK_EXPORT_DELETED');
    }
    for (const n of ['fleece', 'cbw', 'tmp']) await c.cmd('blockdev-del', { 'node-name': n });
    if (since) await c.cmd('block-dirty-bitmap-remove', { node: 'src', name: since });
    results.push({ round, bareName, matches: identical(backup, expected), incremental: copied < SIZE / 2, changedSinceCheckpoint: !identical(src, expected) });
    previous = backup;
  }
  return results;
}

describe.skipIf(!haveTools || !pythonNbdAvailable())('pull-mode incremental backup over NBD', () => {
  it('a full backup and incrementals read through dirty-bitmap contexts rebuild the disk at each checkpoint', async () => {
    const { ours, theirs } = await both(pullBackups);
    expect(ours).toEqual(theirs);
    expect(theirs[1].bareName).toEqual({ error: { class: 'GenericError', desc: "Bitmap 'b0' is not found" } });
    for (const r of ours) expect(r).toEqual({ round: r.round, bareName: r.bareName, matches: true, incremental: r.round > 0, changedSinceCheckpoint: true });
  });
});
