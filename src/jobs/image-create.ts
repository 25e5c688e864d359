/**
 * Creating an image file for drive-backup and drive-mirror (mode
 * absolute-paths), as QEMU's bdrv_img_create does, through the drivers'
 * blockdev-create callbacks: the protocol file first, then the format on
 * top of it through a node opened for the purpose.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { closeImplicitNode, openImplicitNode } from '../block/global-state/blockdev';
import { gsDrivers } from '../block/global-state/driver-table';
import { createContext } from './create-job';

export interface NewImage {
  filename: string;
  format: string;
  size: number;
  backing?: { filename: string; format: string };
}

export async function createImage(image: NewImage): Promise<void> {
  assertMainLoop();
  const format = gsDrivers.get(image.format);
  if (!format) throw QmpError.generic(`Unknown file format '${image.format}'`);
  const file = gsDrivers.get('file')!;
  if (format === file || image.format === 'raw') {
    await file.create!({ driver: 'file', filename: image.filename, size: image.size }, createContext(() => false));
    return;
  }
  if (!format.create) throw QmpError.generic(`Format driver '${image.format}' does not support image creation`);
  await file.create!({ driver: 'file', filename: image.filename, size: 0 }, createContext(() => false));
  const node = await openImplicitNode({ driver: 'file', filename: image.filename });
  try {
    const options: Record<string, unknown> = { driver: image.format, file: node.name, size: image.size };
    if (image.backing) {
      options['backing-file'] = image.backing.filename;
      options['backing-fmt'] = image.backing.format;
    }
    await format.create(options, createContext(() => false));
  } finally {
    await closeImplicitNode(node);
  }
}
