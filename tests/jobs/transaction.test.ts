/**
 * `transaction` against qemu-storage-daemon 7.2: all or nothing, jobs that
 * start only once every action is prepared, grouped completion (one job
 * failing cancels the others), and the events of each case in the
 * reference's order.
 */
import * as fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { both, compare as compareRaw, dirs, img, jobEvents, MiB, type Session } from '../helpers/job-session';
import { toolAvailable } from '../helpers/tools';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const backup = (job: string, device: string, target: string, extra: Record<string, unknown> = {}) => ({
  type: 'blockdev-backup',
  data: { 'job-id': job, device, target, sync: 'full', ...extra },
});
const GROUPED = { 'completion-mode': 'grouped' };

const fourImages = (dir: string) => ({
  a: img(dir, 'a.raw', 8 * MiB, [[0x11, 0, 8 * MiB]]),
  b: img(dir, 'b.raw', 8 * MiB),
  c: img(dir, 'c.raw', 8 * MiB, [[0x22, MiB, 2 * MiB]]),
  d: img(dir, 'd.raw', 8 * MiB),
});

/** Node names and drivers, without the automatic names of filters. */
async function nodes(s: Session): Promise<string[]> {
  const list = (await s.c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string; drv: string }>;
  return list.map((n) => `${n['node-name'].startsWith('#') ? '#auto' : n['node-name']}:${n.drv}`).sort();
}

describe.skipIf(!haveTools)('transaction against qemu-storage-daemon 7.2', () => {
  it('is all or nothing: a failing later action leaves no job, filter or busy node from the earlier ones', async () => {
    const graphs: Record<string, string[]> = {};
    const r = await both(fourImages, async (s) => {
      const { t } = s;
      const before = await nodes(s);
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), { type: 'abort', data: {} }] });
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), backup('j2', 'c', 'nosuch')] });
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), backup('j1', 'c', 'd')] });
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), backup('j2', 'c', 'd', { speed: -1 })] });
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), backup('j2', 'c', 'd')], properties: GROUPED });
      await t.until('BLOCK_JOB_COMPLETED', 2);
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), { type: 'abort', data: {} }], properties: GROUPED });
      await t.run('transaction', { actions: [] });
      await t.run('query-block-jobs');
      await t.run('query-jobs');
      expect(await nodes(s)).toEqual(before);
      const graph = await s.c.cmd('x-debug-query-block-graph');
      graphs[s.daemon.flavour] = graph.nodes.map((n: { type: string }) => n.type);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    // Up to the grouped transaction that succeeds, the order does not depend on timing.
    const cut = (ev: string[]) => ev.slice(0, ev.findIndex((e) => e.includes('"waiting"')));
    expect(cut(r.qbd.t.events)).toEqual(cut(r.qsd.t.events));
    expect(graphs.qbd).not.toContain('block-job');
    expect(graphs.qbd).toEqual(graphs.qsd);
  });

  it('starts the jobs of a transaction only after every action is prepared, and each completes', async () => {
    const r = await both(fourImages, async ({ t, dir }) => {
      await t.run('transaction', { actions: [backup('j1', 'a', 'b'), backup('j2', 'c', 'd')] });
      await t.until('BLOCK_JOB_COMPLETED', 2);
      await t.run('query-block-jobs');
      expect(compareRaw(`${dir}/a.raw`, `${dir}/b.raw`)).toBe(true);
      expect(compareRaw(`${dir}/c.raw`, `${dir}/d.raw`)).toBe(true);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    // created, created, then each start inside the transaction's drained section, then the end of it.
    expect(r.qbd.t.events.slice(0, 8)).toEqual(r.qsd.t.events.slice(0, 8));
    for (const job of ['j1', 'j2']) expect(jobEvents(r.qbd.t.events, job)).toEqual(jobEvents(r.qsd.t.events, job));
  });

  it('grouped: a job whose target fails cancels the other, in the reference event order', async () => {
    // Writes past 4 MiB fail with EFBIG: the 16 MiB backup fails, the 2 MiB one would succeed.
    const images = (dir: string) => ({
      a: img(dir, 'a.raw', 2 * MiB, [[0x11, 0, 2 * MiB]]),
      b: img(dir, 'b.raw', 2 * MiB),
      c: img(dir, 'c.raw', 16 * MiB, [[0x22, 0, 16 * MiB]]),
      d: img(dir, 'd.raw', 16 * MiB),
    });
    const r = await both(
      images,
      async ({ t }) => {
        await t.run('transaction', { actions: [backup('j1', 'a', 'b', { speed: MiB }), backup('j2', 'c', 'd')], properties: GROUPED });
        await t.until('BLOCK_JOB_CANCELLED');
        await t.run('query-block-jobs');
        await t.run('query-jobs');
      },
      undefined,
      { fileSizeLimitKiB: 4096 },
    );
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
    expect(r.qbd.t.events.some((e) => e.startsWith('BLOCK_JOB_COMPLETED') && e.includes('File too large'))).toBe(true);
  });

  it('grouped: the same failure in individual mode leaves the other job to complete', async () => {
    const images = (dir: string) => ({
      a: img(dir, 'a.raw', 2 * MiB, [[0x11, 0, 2 * MiB]]),
      b: img(dir, 'b.raw', 2 * MiB),
      c: img(dir, 'c.raw', 16 * MiB, [[0x22, 0, 16 * MiB]]),
      d: img(dir, 'd.raw', 16 * MiB),
    });
    const r = await both(
      images,
      async ({ t, dir }) => {
        await t.run('transaction', { actions: [backup('j1', 'a', 'b', { speed: MiB }), backup('j2', 'c', 'd')] });
        await t.until('BLOCK_JOB_COMPLETED', 2);
        expect(compareRaw(`${dir}/a.raw`, `${dir}/b.raw`)).toBe(true);
      },
      undefined,
      { fileSizeLimitKiB: 4096 },
    );
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('grouped: jobs wait for each other in pending and one job-finalize finalizes the group', async () => {
    const r = await both(fourImages, async ({ t, c }) => {
      await t.run('transaction', {
        actions: [backup('j1', 'a', 'b', { 'auto-finalize': false }), backup('j2', 'c', 'd')],
        properties: GROUPED,
      });
      await t.until('BLOCK_JOB_PENDING');
      const statuses = ((await c.cmd('query-jobs')) as Array<{ id: string; status: string }>).map((j) => `${j.id}:${j.status}`).sort();
      expect(statuses).toEqual(['j1:pending', 'j2:pending']);
      await t.run('job-finalize', { id: 'j2' });
      await t.until('BLOCK_JOB_COMPLETED', 2);
      await t.run('query-jobs');
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    for (const job of ['j1', 'j2']) expect(jobEvents(r.qbd.t.events, job)).toEqual(jobEvents(r.qsd.t.events, job));
    // Once both wait, the group goes pending and finalizes newest first.
    const tail = (ev: string[]) => ev.slice(ev.findIndex((e) => e.includes('"pending"')));
    expect(tail(r.qbd.t.events)).toEqual(tail(r.qsd.t.events));
  });

  it('grouped: a job cancelled by the client cancels the rest of its group', async () => {
    const r = await both(fourImages, async ({ t }) => {
      await t.run('transaction', { actions: [backup('j1', 'a', 'b', { speed: MiB }), backup('j2', 'c', 'd', { speed: MiB })], properties: GROUPED });
      await t.run('block-job-cancel', { device: 'j1' });
      await t.until('BLOCK_JOB_CANCELLED', 2);
      await t.run('query-jobs');
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.events).toEqual(r.qsd.t.events);
  });

  it('refuses a second job on a node a job holds, with the reference words', async () => {
    const r = await both(fourImages, async ({ t }) => {
      await t.run('blockdev-backup', { 'job-id': 'hold', device: 'a', target: 'b', sync: 'none' });
      await t.run('blockdev-backup', { 'job-id': 'x1', device: 'c', target: 'b', sync: 'full' });
      await t.run('blockdev-mirror', { 'job-id': 'x2', device: 'c', target: 'b', sync: 'full' });
      await t.run('blockdev-mirror', { 'job-id': 'x3', device: 'a', target: 'c', sync: 'full' });
      await t.run('transaction', { actions: [backup('x4', 'c', 'b')] });
      await t.run('block-job-cancel', { device: 'hold' });
      await t.until('BLOCK_JOB_CANCELLED');
      await t.run('blockdev-mirror', { 'job-id': 'm', device: 'a', target: 'b', sync: 'none' });
      await t.until('BLOCK_JOB_READY');
      await t.run('blockdev-backup', { 'job-id': 'x5', device: 'a', target: 'c', sync: 'full' });
      await t.run('blockdev-backup', { 'job-id': 'x6', device: 'c', target: 'b', sync: 'full' });
      await t.run('blockdev-mirror', { 'job-id': 'x7', device: 'c', target: 'a', sync: 'full' });
      await t.run('transaction', { actions: [backup('x8', 'a', 'd')] });
      await t.run('block-job-cancel', { device: 'm', force: true });
      await t.until('BLOCK_JOB_CANCELLED', 2);
    });
    expect(r.qbd.t.lines).toEqual(r.qsd.t.lines);
    expect(r.qbd.t.lines.filter((l) => l.includes('is busy'))).toHaveLength(7);
  });
});

describe('transaction, qbd alone', () => {
  it.skipIf(!haveTools)('fails at an action that cannot be prepared, saying why, and undoes the actions before it', async () => {
    const { startDaemon, tempDir } = await import('../helpers/daemons');
    const dir = tempDir('qbd-tx-');
    dirs.push(dir);
    const files = fourImages(dir);
    const d = await startDaemon('qbd', [], { dir });
    try {
      const c = await d.client();
      for (const [node, file] of Object.entries(files)) await c.cmd('blockdev-add', { driver: 'raw', 'node-name': node, file: { driver: 'file', filename: file } });
      const reply = await c.execute('transaction', {
        actions: [backup('j1', 'a', 'b'), { type: 'blockdev-snapshot-internal-sync', data: { device: 'c', name: 's' } }],
      });
      expect(reply.error).toEqual({ class: 'GenericError', desc: "Block format 'raw' used by device 'c' does not support internal snapshots" });
      expect(await c.cmd('query-jobs')).toEqual([]);
      expect(c.events.map((e: { data: { status: string } }) => e.data.status)).toEqual(['created', 'aborting', 'concluded', 'null']);
      c.close();
    } finally {
      await d.stop();
    }
  });
});
