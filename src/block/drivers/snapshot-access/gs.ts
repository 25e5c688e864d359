/**
 * snapshot-access, GS half: a read-only view of the point in time a user's
 * copy-before-write node (`file`) keeps, to export for image fleecing. Not a
 * filter: it shows the snapshot, not its child's current data, so chains
 * and queries stop at it as QEMU's do.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { PERM_ALL } from '../../common/permissions';
import { nodeFilename } from '../../global-state/node-info';

export const snapshotAccessGs: GsDriver<undefined> = {
  descriptor: { name: 'snapshot-access', kind: 'format' },
  hasDriverInfo: false,
  strongOptions: [],

  async open(ctx) {
    const file = (await ctx.openChild('file', 'file', true))!;
    return { state: undefined, length: file.length, requestAlignment: file.requestAlignment };
  },

  // It reads the snapshot through the copy-before-write node's own interface, not the node's data: it needs nothing and shares everything.
  childPerms: () => ({ perm: 0, shared: PERM_ALL }),

  plainFilename(node) {
    const file = node.child('file');
    return file ? nodeFilename(file) : undefined;
  },
};
