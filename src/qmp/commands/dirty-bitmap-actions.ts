/**
 * The dirty bitmap actions of `transaction`: each prepare does the
 * command's work and keeps what abort needs to put things back, as QEMU's
 * block-dirty-bitmap-* transaction actions do.
 */
import { log } from '../../common/log';
import { lookupBitmap, releaseBitmap, syncBitmaps, type BdrvDirtyBitmap } from '../../block/global-state/dirty-bitmaps';
import {
  addDirtyBitmap,
  clearDirtyBitmap,
  mergeDirtyBitmaps,
  removeDirtyBitmap,
  setDirtyBitmapEnabled,
  type BitmapAddArgs,
  type BitmapRef,
} from '../../block/global-state/dirty-bitmap-ops';
import { refuseGroupedCompletion, registerTransactionAction, type TransactionAction, type TransactionContext } from '../transaction-actions';

type BitmapArgs = { node: string; name: string };

function addAction(args: BitmapAddArgs): TransactionAction {
  let added: BdrvDirtyBitmap | undefined;
  return {
    async prepare() {
      added = await addDirtyBitmap(args);
    },
    async abort() {
      if (added) await releaseBitmap(added);
    },
  };
}

/** The bitmap leaves the node at commit; until then it is busy and records nothing new for its owner. */
function removeAction(args: BitmapArgs): TransactionAction {
  let bm: BdrvDirtyBitmap | undefined;
  let wasPersistent = false;
  return {
    async prepare() {
      wasPersistent = lookupBitmap(args.node, args.name).persistent;
      bm = await removeDirtyBitmap(args.node, args.name, false);
      bm.busy = true;
    },
    commit() {
      if (!bm) return;
      bm.busy = false;
      // The bitmap leaves the node's list now; the I/O context hears of it just after.
      releaseBitmap(bm).catch((err: Error) => log.error({ bitmap: args.name, err: err.message }, 'releasing a removed bitmap failed'));
    },
    async abort() {
      if (!bm) return;
      bm.busy = false;
      // Already gone from the image: stored again when the node closes.
      if (wasPersistent) {
        bm.persistent = true;
        await syncBitmaps(bm.node);
      }
    },
  };
}

/** Clear and merge change bits: abort puts the bits back as they were. */
function bitsAction(change: () => { bm: BdrvDirtyBitmap; before: Int32Array }): TransactionAction {
  let undo: { bm: BdrvDirtyBitmap; before: Int32Array } | undefined;
  return {
    prepare() {
      undo = change();
    },
    abort() {
      undo?.bm.bits.restore(undo.before);
    },
  };
}

function enableAction(args: BitmapArgs, enabled: boolean): TransactionAction {
  let undo: { bm: BdrvDirtyBitmap; wasEnabled: boolean } | undefined;
  return {
    prepare() {
      undo = setDirtyBitmapEnabled(args.node, args.name, enabled);
    },
    abort() {
      if (undo) undo.bm.enabled = undo.wasEnabled;
    },
  };
}

/** QEMU's bitmap actions refuse grouped completion before anything else. */
function registerBitmapAction<A>(type: string, make: (args: A) => TransactionAction): void {
  registerTransactionAction(type, (args: A, ctx: TransactionContext) => {
    const action = make(args);
    const prepare = action.prepare.bind(action);
    return {
      ...action,
      prepare() {
        refuseGroupedCompletion(type, ctx);
        return prepare();
      },
    };
  });
}

registerBitmapAction('block-dirty-bitmap-add', (args: BitmapAddArgs) => addAction(args));
registerBitmapAction('block-dirty-bitmap-remove', (args: BitmapArgs) => removeAction(args));
registerBitmapAction('block-dirty-bitmap-clear', (args: BitmapArgs) => bitsAction(() => clearDirtyBitmap(args.node, args.name)));
registerBitmapAction('block-dirty-bitmap-enable', (args: BitmapArgs) => enableAction(args, true));
registerBitmapAction('block-dirty-bitmap-disable', (args: BitmapArgs) => enableAction(args, false));
registerBitmapAction('block-dirty-bitmap-merge', (args: { node: string; target: string; bitmaps: BitmapRef[] }) =>
  bitsAction(() => mergeDirtyBitmaps(args.node, args.target, args.bitmaps)),
);
