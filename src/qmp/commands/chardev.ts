/**
 * chardev-add, chardev-change, chardev-remove, chardev-send-break,
 * query-chardev, query-chardev-backends, ringbuf-write and ringbuf-read.
 */
import { defineCommand } from '../command';
import { QmpError } from '../errors';
import { CHARDEV_BACKENDS, type ChardevBackend } from '../chardev/backends';
import { chardevAdd, chardevChange, chardevRemove, findChardev, listChardevs } from '../chardev/registry';
import { RingbufChardev } from '../chardev/ringbuf-chardev';
import { ringbufInput, ringbufOutput } from '../chardev/ringbuf-data';

type DataFormat = 'utf8' | 'base64';

function ringbuf(device: string): RingbufChardev {
  const chardev = findChardev(device);
  if (!chardev) throw QmpError.generic(`Device '${device}' not found`);
  if (!(chardev instanceof RingbufChardev)) throw QmpError.generic(`${device} is not a ringbuf device`);
  return chardev;
}

export function chardevCommands() {
  return [
    defineCommand('query-chardev', () => listChardevs()),
    defineCommand('query-chardev-backends', () => CHARDEV_BACKENDS.map((name) => ({ name }))),
    defineCommand<{ id: string; backend: ChardevBackend }>('chardev-add', ({ id, backend }) => chardevAdd(id, backend)),
    defineCommand<{ id: string; backend: ChardevBackend }>('chardev-change', ({ id, backend }) => chardevChange(id, backend)),
    defineCommand<{ id: string }>('chardev-remove', async ({ id }) => {
      await chardevRemove(id);
      return {};
    }),
    // A break reaches the frontend only; monitors, the only frontends here, ignore it, as the reference's do.
    defineCommand<{ id: string }>('chardev-send-break', ({ id }) => {
      if (!findChardev(id)) throw QmpError.generic(`Chardev '${id}' not found`);
      return {};
    }),
    defineCommand<{ device: string; data: string; format?: DataFormat }>('ringbuf-write', ({ device, data, format }) => {
      const ring = ringbuf(device);
      ring.write(ringbufInput(data, format));
      return {};
    }),
    defineCommand<{ device: string; size: number | bigint; format?: DataFormat }>('ringbuf-read', ({ device, size, format }) => {
      const ring = ringbuf(device);
      if (BigInt(size) <= 0n) throw QmpError.generic('size must be greater than zero');
      const max = BigInt(size) > BigInt(ring.count()) ? ring.count() : Number(size);
      return ringbufOutput(ring.read(max), format);
    }),
  ];
}
