/**
 * mirror_top, GS half: the filter a mirror job inserts above its source.
 * It takes over the source's parents, so every write to the source passes
 * it; the job's dirty tracking sits on the source's write path in the I/O
 * layer. Internal: not creatable with blockdev-add.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { nodeFilename } from '../../global-state/node-info';
import { QmpError } from '../../../qmp/errors';
import { PERM } from '../../common/permissions';

export const mirrorTopGs: GsDriver<Record<string, never>> = {
  descriptor: { name: 'mirror_top', kind: 'filter' },
  strongOptions: [],

  async open() {
    throw QmpError.generic(`Driver 'mirror_top' can only be used by mirror jobs`);
  },

  // A filter: passes its parents' needs and sharing on to the filtered node.
  childPerms: (_node, _role, perm, shared) => ({ perm, shared }),

  plainFilename(node) {
    const backing = node.child('backing');
    return backing ? nodeFilename(backing) : undefined;
  },

  allocatedSize(node) {
    const backing = node.child('backing');
    const file = backing?.child('file');
    return (backing && backing.driver.allocatedSize?.(backing)) ?? (file && file.driver.allocatedSize?.(file));
  },
};

/**
 * mirror_top of an active block-commit. Everything above the base is about
 * to disappear, so the job lets no one read those nodes consistently: the
 * filter does not ask for consistent reads of the top either, and it shares
 * writing, which would otherwise block the job's own writes to the base.
 */
export const activeCommitTopGs: GsDriver<Record<string, never>> = {
  ...mirrorTopGs,
  childPerms: (_node, _role, perm, shared) => ({ perm: perm & ~PERM.CONSISTENT_READ, shared: shared | PERM.WRITE }),
};
