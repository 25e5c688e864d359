/** Commands on backing chains: external snapshots, reopening nodes, write thresholds. */
import { defineCommand } from '../command';
import { blockdevSnapshot, blockdevSnapshotSync, type BlockdevSnapshotArgs, type BlockdevSnapshotSyncArgs } from '../../block/global-state/external-snapshot';
import { blockdevReopen } from '../../block/global-state/reopen';
import { setWriteThreshold } from '../../block/global-state/write-threshold';

export function chainCommands() {
  return [
    defineCommand<BlockdevSnapshotArgs>('blockdev-snapshot', async (args) => {
      await blockdevSnapshot(args);
      return {};
    }),
    defineCommand<BlockdevSnapshotSyncArgs>('blockdev-snapshot-sync', async (args) => {
      await blockdevSnapshotSync(args);
      return {};
    }),
    defineCommand<{ options: Array<Record<string, unknown>> }>('blockdev-reopen', async (args) => {
      await blockdevReopen(args.options);
      return {};
    }),
    defineCommand<{ 'node-name': string; 'write-threshold': number }>('block-set-write-threshold', async (args) => {
      await setWriteThreshold(args['node-name'], args['write-threshold']);
      return {};
    }),
  ];
}
