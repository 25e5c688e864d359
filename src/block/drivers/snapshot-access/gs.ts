/**
 * snapshot-access, GS half: a read-only view of the point in time a user's
 * copy-before-write node (`file`) keeps, to export for image fleecing.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { PERM } from '../../common/permissions';
import { nodeFilename } from '../../global-state/node-info';

export const snapshotAccessGs: GsDriver<undefined> = {
  descriptor: { name: 'snapshot-access', kind: 'filter' },
  strongOptions: [],

  async open(ctx) {
    const file = (await ctx.openChild('file', 'file', true))!;
    return { state: undefined, length: file.length, requestAlignment: file.requestAlignment };
  },

  // It only reads the snapshot, and lets anybody use the copy-before-write node.
  childPerms: () => ({ perm: PERM.CONSISTENT_READ, shared: PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED | PERM.RESIZE }),

  plainFilename(node) {
    const file = node.child('file');
    return file ? nodeFilename(file) : undefined;
  },
};
