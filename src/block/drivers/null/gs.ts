/** null-co / null-aio, GS half: nothing to open; the size is an option. */
import type { GsDriver } from '../../global-state/driver-gs';
import { PERM_ALL } from '../../common/permissions';
import { QmpError } from '../../../qmp/errors';
import type { NullState } from './common';

function nullDriver(name: 'null-co' | 'null-aio'): GsDriver<NullState> {
  return {
    descriptor: { name, kind: 'protocol' },
    strongOptions: ['size', 'read-zeroes'],
    async open(_ctx, options) {
      const latency = options['latency-ns'];
      if (typeof latency === 'bigint' || Number(latency ?? 0) > Number.MAX_SAFE_INTEGER) throw QmpError.generic('latency-ns is invalid');
      // QEMU aborts on a negative size; qbd refuses it.
      if (Number(options.size ?? 0) < 0) throw QmpError.generic(`Parameter 'size' expects a non-negative number below 2^64`);
      return {
        state: { readZeroes: options['read-zeroes'] === true, latencyNs: Number(options['latency-ns'] ?? 0) },
        length: Number(options.size ?? 1 << 30),
      };
    },
    childPerms: () => ({ perm: 0, shared: PERM_ALL }),
    // Without options that define its content, QEMU names a null node by a pseudo-URL.
    plainFilename: (node) => (node.options.size === undefined && node.options['read-zeroes'] === undefined ? `${name}://` : undefined),
  };
}

export const nullCoGs = nullDriver('null-co');
export const nullAioGs = nullDriver('null-aio');
