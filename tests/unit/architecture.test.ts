/**
 * The GS / I/O contract, checked: GS code refuses to run in a worker, graph
 * edges change only in drained sections, and I/O-context code never imports
 * GS code.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { forbiddenImports } from '../helpers/import-graph';
import { BlockNode } from '../../src/block/global-state/block-node';
import { attachChild } from '../../src/block/global-state/graph';
import { GraphNotDrained } from '../../src/block/global-state/drain';
import type { GsDriver } from '../../src/block/global-state/driver-gs';
import type { IoContext } from '../../src/block/global-state/io-context';

const REPO = path.resolve(__dirname, '..', '..');

/** What the I/O world must never load. */
const GS_WORLD = [/\/global-state\//, /\/drivers\/[^/]+\/gs\.ts$/, /\/src\/qmp\//, /\/src\/objects\//, /\/src\/qom\/(tree|resolve)\.ts$/, /\/src\/cli\//, /\/src\/(daemon|main)\.ts$/];

function runInWorker(code: string): Promise<{ error?: string; code?: string }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { dist: path.join(REPO, 'dist', 'src') } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

describe('the GS/I/O contract', () => {
  it('throws when GS code is called from a worker thread', async () => {
    const result = await runInWorker(`
      const { parentPort, workerData } = require('node:worker_threads');
      const graph = require(workerData.dist + '/block/global-state/graph.js');
      try { graph.allNodes(); parentPort.postMessage({}); }
      catch (e) { parentPort.postMessage({ error: e.message, code: e.code }); }
    `);
    expect(result.code).toBe('QBD_CONTEXT_VIOLATION');
    expect(result.error).toMatch(/global-state code called from I\/O context/);
  });

  it('throws when the QOM tree is touched from a worker thread', async () => {
    const result = await runInWorker(`
      const { parentPort, workerData } = require('node:worker_threads');
      try { require(workerData.dist + '/qom/resolve.js').resolvePath('/objects'); parentPort.postMessage({}); }
      catch (e) { parentPort.postMessage({ error: e.message, code: e.code }); }
    `);
    expect(result.code).toBe('QBD_CONTEXT_VIOLATION');
  });

  it('throws when I/O-context code is started on the main loop', async () => {
    const { assertIoContext } = await import('../../src/common/thread-context');
    expect(() => assertIoContext()).toThrow(/I\/O-context code called on the main loop/);
  });

  it('refuses a graph change outside a drained section', () => {
    const driver = { descriptor: { name: 'null-co', kind: 'protocol' }, strongOptions: [], childPerms: () => ({ perm: 0, shared: 15 }) } as unknown as GsDriver;
    const common = { readOnly: false, autoReadOnly: false, forceShare: false, discard: 'ignore', detectZeroes: 'off', cacheDirect: false, cacheNoFlush: false } as const;
    const mk = (name: string) => new BlockNode(name, false, true, driver, {}, common, {}, 0, {} as IoContext, false, 1, 0);
    const parent = mk('p');
    const child = mk('c');
    expect(() => attachChild(parent, child, 'file')).toThrow(GraphNotDrained);
    parent.quiesce = 1;
    child.quiesce = 1;
    expect(() => attachChild(parent, child, 'file')).not.toThrow();
    expect(child.parents).toHaveLength(1);
  });

  it('finds no GS import in the I/O-context entry point', () => {
    const entry = path.join(REPO, 'src', 'block', 'io', 'context-main.ts');
    expect(forbiddenImports(entry, GS_WORLD)).toEqual([]);
  });

  it('reports a forbidden import, with the chain that reaches it', () => {
    const entry = path.join(REPO, 'tests', 'fixtures', 'import-rule', 'src', 'block', 'io', 'entry.ts');
    const found = forbiddenImports(entry, GS_WORLD);
    expect(found).toHaveLength(1);
    expect(found[0]!.map((f) => path.basename(f))).toEqual(['entry.ts', 'helper.ts', 'graph.ts']);
  });
});
