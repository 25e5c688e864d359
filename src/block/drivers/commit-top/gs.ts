/**
 * commit_top, GS half: the filter an intermediate block-commit inserts
 * above its top node. It takes over the top node's parents and takes no
 * permission on it, so the nodes being committed can stay unreadable to
 * others until the chain is relinked. Internal: not creatable with blockdev-add.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { nodeFilename } from '../../global-state/node-info';
import { QmpError } from '../../../qmp/errors';
import { PERM_ALL } from '../../common/permissions';

export const commitTopGs: GsDriver<Record<string, never>> = {
  descriptor: { name: 'commit_top', kind: 'filter' },
  strongOptions: [],

  async open() {
    throw QmpError.generic(`Driver 'commit_top' can only be used by commit jobs`);
  },

  childPerms: () => ({ perm: 0, shared: PERM_ALL }),

  plainFilename(node) {
    const backing = node.child('backing');
    return backing ? nodeFilename(backing) : undefined;
  },
};
