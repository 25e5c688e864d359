/**
 * The dirty bitmaps an NBD export offers as `qemu:dirty-bitmap:NAME` meta
 * contexts (block-export-add `bitmaps`): found as QEMU's nbd_export_create()
 * finds them, with its words, and busy while the export holds them.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import type { BlockNode } from '../block/global-state/block-node';
import { nextInChain } from '../block/global-state/backing-file';
import { CHECK_ALLOW_RO, checkBitmap, findBitmap, lookupBitmap, type BdrvDirtyBitmap } from '../block/global-state/dirty-bitmaps';
import type { NbdExportBitmap } from './nbd/messages';

export type ExportBitmapRef = string | { node: string; name: string };

/** A bare bitmap name is looked for down the chain: a filter's child, a format's backing file (snapshot-access ends it). */
function findLocal(node: BlockNode, name: string): { bm: BdrvDirtyBitmap; on: BlockNode } | undefined {
  for (let n: BlockNode | undefined = node; n; n = nextInChain(n)) {
    const bm = findBitmap(n, name);
    if (bm) return { bm, on: n };
  }
  return undefined;
}

export class ExportBitmaps {
  private constructor(private readonly held: BdrvDirtyBitmap[], readonly entries: NbdExportBitmap[]) {}

  /** Finds and checks every bitmap; nothing is held until `hold`. */
  static resolve(node: BlockNode, refs: ExportBitmapRef[], writable: boolean): ExportBitmaps {
    assertMainLoop();
    const held: BdrvDirtyBitmap[] = [];
    const entries: NbdExportBitmap[] = [];
    for (const ref of refs) {
      let bm: BdrvDirtyBitmap;
      let name: string;
      if (typeof ref === 'string') {
        const found = findLocal(node, ref);
        if (!found) throw QmpError.generic(`Bitmap '${ref}' is not found`);
        // A read-only client would see a bitmap that keeps changing under writes it cannot make.
        if (!writable && !found.on.readOnly && found.bm.enabled) throw QmpError.generic(`Enabled bitmap '${ref}' incompatible with readonly export`);
        bm = found.bm;
        name = ref;
      } else {
        bm = lookupBitmap(ref.node, ref.name);
        name = ref.name;
      }
      checkBitmap(bm, CHECK_ALLOW_RO);
      held.push(bm);
      entries.push({ context: `qemu:dirty-bitmap:${name}`, bits: bm.bits.state });
    }
    return new ExportBitmaps(held, entries);
  }

  hold(): void {
    for (const bm of this.held) bm.busy = true;
  }

  release(): void {
    for (const bm of this.held) bm.busy = false;
  }
}
