/**
 * copy-before-write, GS half: the filter a backup job inserts above its
 * source (`file`) with the backup target as `target`. Before a write
 * reaches the source, the old data of the clusters it touches is copied to
 * the target, so the target keeps the source as it was when the job began.
 * The copying sits on the source's write path in the I/O layer (the job's
 * run half); this node carries the graph edges and permissions.
 */
import type { GsDriver } from '../../global-state/driver-gs';
import { nodeFilename } from '../../global-state/node-info';
import type { BlockNode } from '../../global-state/block-node';
import { findNode } from '../../global-state/graph';
import { PERM } from '../../common/permissions';
import { QmpError } from '../../../qmp/errors';

/**
 * Users that are not nodes (exports) stay on the source rather than move
 * above the filter; their writes pass the job's copy-before-write on the
 * source's write path, so the filter lets them write.
 */
function keepsWriters(node: BlockNode): boolean {
  const name = node.options.file;
  const source = typeof name === 'string' ? findNode(name) : undefined;
  return !!source?.parents.some((e) => e.parent.kind === 'backend' && e.parent.graphType !== 'block-job' && e.perm & PERM.WRITE);
}

export const copyBeforeWriteGs: GsDriver<Record<string, never>> = {
  descriptor: { name: 'copy-before-write', kind: 'filter' },
  strongOptions: [],

  async open() {
    throw QmpError.generic(`Driver 'copy-before-write' can only be used by backup jobs`);
  },

  childPerms(node, role, perm, shared) {
    // The target is written by the filter alone; the source keeps readers, and
    // nobody else may write it behind the filter's back.
    if (role === 'target') return { perm: PERM.WRITE, shared: PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED };
    return { perm, shared: shared & (PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED | (keepsWriters(node) ? PERM.WRITE : 0)) };
  },

  plainFilename(node) {
    const file = node.child('file');
    return file ? nodeFilename(file) : undefined;
  },
};
