/**
 * The dirty bitmaps an NBD export offers as `qemu:dirty-bitmap:NAME` meta
 * contexts (block-export-add `bitmaps`): found as QEMU's nbd_export_create()
 * finds them, with its words, and busy while the export holds them.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import type { BlockNode } from '../block/global-state/block-node';
import { CHECK_ALLOW_RO, checkBitmap, findBitmap, lookupBitmap, type BdrvDirtyBitmap } from '../block/global-state/dirty-bitmaps';
import type { NbdExportBitmap } from './nbd/messages';

export type ExportBitmapRef = string | { node: string; name: string };

/**
 * The node a bare bitmap name is looked for on next: a filter's child, a
 * format's backing file. snapshot-access reads a point in time, not its
 * child's current data: QEMU does not count it as a filter, and stops there.
 */
function filteredOrCow(node: BlockNode): BlockNode | undefined {
  if (node.driver.descriptor.name === 'snapshot-access') return undefined;
  return node.driver.descriptor.kind === 'filter' ? node.child('file') : node.child('backing');
}

function findLocal(node: BlockNode, name: string): { bm: BdrvDirtyBitmap; on: BlockNode } | undefined {
  for (let n: BlockNode | undefined = node; n; n = filteredOrCow(n)) {
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
