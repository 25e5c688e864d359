/** block-dirty-bitmap-* commands and x-debug-block-dirty-bitmap-sha256. */
import { defineCommand } from '../command';
import { bitmapSha256, lookupBitmap } from '../../block/global-state/dirty-bitmaps';
import {
  addDirtyBitmap,
  clearDirtyBitmap,
  mergeDirtyBitmaps,
  removeDirtyBitmap,
  setDirtyBitmapEnabled,
  type BitmapAddArgs,
  type BitmapRef,
} from '../../block/global-state/dirty-bitmap-ops';
import './dirty-bitmap-actions';

type BitmapArgs = { node: string; name: string };

export function dirtyBitmapCommands() {
  return [
    defineCommand<BitmapAddArgs>('block-dirty-bitmap-add', async (args) => {
      await addDirtyBitmap(args);
      return {};
    }),
    defineCommand<BitmapArgs>('block-dirty-bitmap-remove', async (args) => {
      await removeDirtyBitmap(args.node, args.name, true);
      return {};
    }),
    defineCommand<BitmapArgs>('block-dirty-bitmap-clear', (args) => {
      clearDirtyBitmap(args.node, args.name);
      return {};
    }),
    defineCommand<BitmapArgs>('block-dirty-bitmap-enable', (args) => {
      setDirtyBitmapEnabled(args.node, args.name, true);
      return {};
    }),
    defineCommand<BitmapArgs>('block-dirty-bitmap-disable', (args) => {
      setDirtyBitmapEnabled(args.node, args.name, false);
      return {};
    }),
    defineCommand<{ node: string; target: string; bitmaps: BitmapRef[] }>('block-dirty-bitmap-merge', (args) => {
      mergeDirtyBitmaps(args.node, args.target, args.bitmaps);
      return {};
    }),
    defineCommand<BitmapArgs>('x-debug-block-dirty-bitmap-sha256', (args) => ({ sha256: bitmapSha256(lookupBitmap(args.node, args.name)) })),
  ];
}
