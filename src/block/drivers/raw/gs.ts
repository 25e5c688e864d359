/** raw, GS half: a window onto the `file` child, the whole child by default. */
import type { GsDriver } from '../../global-state/driver-gs';
import { QmpError } from '../../../qmp/errors';
import { PERM } from '../../common/permissions';
import type { RawState } from './common';

export const rawGs: GsDriver<RawState> = {
  descriptor: { name: 'raw', kind: 'format' },
  strongOptions: ['offset', 'size'],

  async open(ctx, options) {
    const file = (await ctx.openChild('file', 'file', true))!;
    const offset = Number(options.offset ?? 0);
    const fileSize = file.length;
    if (offset > fileSize) {
      throw QmpError.generic(`Offset (${offset}) cannot be greater than size of the containing file (${fileSize})`);
    }
    const size = options.size === undefined ? fileSize - offset : Number(options.size);
    if (offset + size > fileSize) {
      // The double space is QEMU's.
      throw QmpError.generic(`The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the  actual size of the containing file (${fileSize})`);
    }
    return {
      state: { offset, fixedSize: options.size !== undefined },
      length: size,
      requestAlignment: file.requestAlignment,
    };
  },

  childPerms(node, _role, perm, shared) {
    // A window (offset/size) stores data, not a pass-through view: others must not resize under it.
    const isWindow = node.options.offset !== undefined || node.options.size !== undefined;
    return { perm, shared: isWindow ? shared & ~PERM.RESIZE : shared };
  },
};
