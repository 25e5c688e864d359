/** Commands on backing chains: external and internal snapshots, reopening nodes, write thresholds. */
import { defineCommand } from '../command';
import { blockdevSnapshot, blockdevSnapshotSync, type BlockdevSnapshotArgs, type BlockdevSnapshotSyncArgs } from '../../block/global-state/external-snapshot';
import {
  blockdevSnapshotDeleteInternalSync,
  blockdevSnapshotInternalSync,
  type SnapshotDeleteInternalArgs,
  type SnapshotInternalArgs,
} from '../../block/global-state/internal-snapshot';
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
    defineCommand<SnapshotInternalArgs>('blockdev-snapshot-internal-sync', async (args) => {
      await blockdevSnapshotInternalSync(args);
      return {};
    }),
    defineCommand<SnapshotDeleteInternalArgs>('blockdev-snapshot-delete-internal-sync', (args) => blockdevSnapshotDeleteInternalSync(args)),
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
