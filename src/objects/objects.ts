/**
 * User-creatable objects (--object / object-add / object-del). qbd has the
 * `iothread` type: each iothread is an I/O context, a worker thread of its
 * own. Its polling properties tune QEMU's event loop; they are accepted,
 * range-checked and kept, and have no effect on a Node event loop.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { addIothreadContext, findIothreadContext, removeIothreadContext } from '../block/global-state/io-contexts';

interface UserObject {
  id: string;
  qomType: string;
  props: Record<string, unknown>;
}

const objects = new Map<string, UserObject>();

export const OBJECT_TYPES = ['iothread'] as const;

const INT64_MAX = 9223372036854775807n;

/** QEMU's id_wellformed(). */
function checkId(id: string): void {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) throw QmpError.generic(`Parameter 'id' expects an identifier`);
}

function checkIothreadProps(props: Record<string, unknown>): void {
  for (const key of ['poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch']) {
    const v = props[key];
    if (v !== undefined && (BigInt(v as number) < 0n || BigInt(v as number) > INT64_MAX)) {
      throw QmpError.generic(`${key} value must be in range [0, ${INT64_MAX}]`);
    }
  }
}

/** The object with this id, if any: for options that name one (an nbd node's tls-creds). */
export function findObject(id: string): Readonly<UserObject> | undefined {
  assertMainLoop();
  return objects.get(id);
}

export function objectAdd(args: Record<string, unknown>): void {
  assertMainLoop();
  const { 'qom-type': qomType, id, ...props } = args as { 'qom-type': string; id: string } & Record<string, unknown>;
  checkId(id);
  if (objects.has(id)) throw QmpError.generic(`attempt to add duplicate property '${id}' to object (type 'container')`);
  if (qomType === 'iothread') {
    checkIothreadProps(props);
    addIothreadContext(id);
  }
  objects.set(id, { id, qomType, props });
}

export async function objectDel(id: string): Promise<void> {
  assertMainLoop();
  const obj = objects.get(id);
  if (!obj) throw QmpError.generic(`object '${id}' not found`);
  if (obj.qomType === 'iothread') {
    // QEMU frees an iothread that nodes still use and crashes later; qbd refuses instead.
    const ctx = findIothreadContext(id);
    if (ctx && ctx.nodes.size > 0) throw QmpError.generic(`object '${id}' can't be deleted`);
    await removeIothreadContext(id);
  }
  objects.delete(id);
}

export function objectTypesHelp(): string {
  return `List of user creatable objects:\n${OBJECT_TYPES.map((t) => `  ${t}`).join('\n')}\n`;
}
