/** Commands on block nodes and the graph. */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import { blockdevAdd, blockdevDel } from '../../block/global-state/blockdev';
import { findNode } from '../../block/global-state/graph';
import { findIothreadContext, getDefaultContext } from '../../block/global-state/io-contexts';
import { moveToContext } from '../../block/global-state/iothread-move';
import { blockResize } from '../../block/global-state/resize';
import { changeChild, type ChildChangeArgs } from '../../block/global-state/child-change';
import { queryBlock, queryBlockStats } from '../../block/global-state/block-stats';
import { debugBlockGraph, queryNamedBlockNodes } from '../../block/global-state/node-info';

export function blockCommands() {
  return [
    defineCommand<Record<string, unknown>>('blockdev-add', async (args) => {
      await blockdevAdd(args);
      return {};
    }),
    defineCommand<{ 'node-name': string }>('blockdev-del', async (args) => {
      await blockdevDel(args['node-name']);
      return {};
    }),
    defineCommand<{ flat?: boolean }>('query-named-block-nodes', (args) => queryNamedBlockNodes(args.flat === true)),
    defineCommand('query-block', () => queryBlock()),
    defineCommand<{ 'query-nodes'?: boolean }>('query-blockstats', (args) => queryBlockStats(args['query-nodes'] === true)),
    defineCommand<{ device?: string; 'node-name'?: string; size: number }>('block_resize', async (args) => {
      await blockResize(args.device, args['node-name'], args.size);
      return {};
    }),
    defineCommand('x-debug-query-block-graph', () => debugBlockGraph()),
    defineCommand<ChildChangeArgs>('x-blockdev-change', async (args) => {
      await changeChild(args);
      return {};
    }),
    defineCommand<{ 'node-name': string; iothread: string | null; force?: boolean }>('x-blockdev-set-iothread', async (args) => {
      const node = findNode(args['node-name']);
      if (!node) throw QmpError.generic(`Failed to find node with node-name='${args['node-name']}'`);
      let target = getDefaultContext();
      if (args.iothread !== null) {
        const ctx = findIothreadContext(args.iothread);
        if (!ctx) throw QmpError.generic(`Cannot find iothread ${args.iothread}`);
        target = ctx;
      }
      await moveToContext(node, target, args.force === true);
      return {};
    }),
  ];
}
