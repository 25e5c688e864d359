/**
 * copy-on-read, GS half, as block-stream inserts it above the node it
 * streams into (child `file`, option `bottom`: the lowest node whose data
 * is copied). The copying itself is the stream job's run half, which
 * serialises its copies with the writes that pass this filter. Internal
 * for now: blockdev-add does not offer the driver.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { nodeFilename } from '../../global-state/node-info';
import { QmpError } from '../../../qmp/errors';
import { PERM } from '../../common/permissions';

export const copyOnReadGs: GsDriver<Record<string, never>> = {
  descriptor: { name: 'copy-on-read', kind: 'filter' },
  strongOptions: [],

  async open() {
    throw QmpError.generic(`Driver 'copy-on-read' can only be used by stream jobs`);
  },

  // What the parents need, plus writing unchanged data (the copies), which it also lets others do.
  childPerms: (_node, _role, perm, shared) => ({ perm: perm | PERM.WRITE_UNCHANGED, shared: shared | PERM.WRITE_UNCHANGED }),

  plainFilename(node) {
    const file = node.child('file');
    return file ? nodeFilename(file) : undefined;
  },
};
