/** object-add and object-del. */
import { defineCommand } from '../command';
import { objectAdd, objectDel } from '../../objects/objects';

export function objectCommands() {
  return [
    defineCommand<Record<string, unknown>>('object-add', (args) => {
      objectAdd(args);
      return {};
    }),
    defineCommand<{ id: string }>('object-del', async (args) => {
      await objectDel(args.id);
      return {};
    }),
  ];
}
