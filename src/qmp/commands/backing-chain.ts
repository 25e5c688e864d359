/** change-backing-file: rewrites the backing file name an image of a chain records, nothing else. */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import { strerror } from '../../common/errno';
import { chainBase, chainContains, isRootNode, rewriteBackingFile } from '../../block/global-state/backing-file';
import { nodeBusyReason } from '../../block/global-state/blockdev';
import { findNode, requireNode } from '../../block/global-state/graph';
import type { BlockNode } from '../../block/global-state/block-node';

/** QEMU's qmp_get_root_bs: a node that only BlockBackends (monitor, exports) use. */
function rootNode(name: string): BlockNode {
  const node = findNode(name);
  if (!node) throw QmpError.generic(`Cannot find device='${name}' nor node-name='${name}'`);
  if (!isRootNode(node)) throw QmpError.generic('Need a root block node');
  return node;
}

type Args = { device: string; 'image-node-name': string; 'backing-file': string };

export function backingChainCommands() {
  return [
    defineCommand<Args>('change-backing-file', async (args) => {
      const root = rootNode(args.device);
      const image = requireNode(args['image-node-name']);
      if (chainBase(image) === image) throw QmpError.generic('not allowing backing file change on an image without a backing file');
      const busy = nodeBusyReason(root);
      if (busy) throw QmpError.generic(busy);
      if (!chainContains(root, image)) throw QmpError.generic(`'${args.device}' and image file are not in the same chain`);
      try {
        // QEMU records the image's own format as the backing format here.
        await rewriteBackingFile(image, args['backing-file'], image.driver.descriptor.name);
      } catch (err) {
        if (err instanceof QmpError) throw err;
        const code = (err as { code?: string }).code;
        throw QmpError.generic(`Could not change backing file to '${args['backing-file']}': ${code ? strerror(code) : (err as Error).message}`);
      }
      return {};
    }),
  ];
}
