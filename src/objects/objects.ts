/**
 * User-creatable objects (--object / object-add / object-del).
 *
 * - `iothread`: an I/O context, a worker thread of its own. Its polling
 *   properties tune QEMU's event loop; they are accepted, range-checked and
 *   kept, and have no effect on a Node event loop.
 * - `tls-creds-x509`, `tls-creds-psk`: credentials read from a directory
 *   when the object is created (tls-creds.ts), kept as plain data.
 * - `authz-simple`, `authz-list`: rules an identity is checked against.
 *
 * Users such as the NBD server take a copy of credentials when they start,
 * so deleting an object they use is allowed, as in QEMU, where they hold a
 * reference: they go on with what they took.
 */
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { addIothreadContext, findIothreadContext, removeIothreadContext } from '../block/global-state/io-contexts';
import type { AuthzRule, AuthzRules } from '../crypto/authz';
import type { TlsCredentials } from '../crypto/tls-credentials';
import { checkTlsCredsProps, loadPsk, loadX509, type TlsCredsProps } from './tls-creds';
import { objectsContainer } from '../qom/tree';
import { objectNode } from './object-node';
import { checkThreadPool, type UserObject } from './user-object';


const objects = new Map<string, UserObject>();

/** Sorted, as `--object help` lists them. */
export const OBJECT_TYPES = ['authz-list', 'authz-simple', 'iothread', 'tls-creds-psk', 'tls-creds-x509'] as const;

const INT64_MAX = 9223372036854775807n;

/** QEMU's id_wellformed(). */
function checkId(id: string): void {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) throw QmpError.generic(`Parameter 'id' expects an identifier`);
}

/** The checks of setting an iothread's properties: each must be non-negative. */
function checkIothreadProps(props: Record<string, unknown>): void {
  for (const key of ['poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch', 'thread-pool-min', 'thread-pool-max']) {
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

/**
 * The reference's order: the id is checked, the properties set, the object
 * added to /objects and then completed; when completion fails it is taken
 * out again, which the listing order of /objects remembers.
 */
export function objectAdd(args: Record<string, unknown>): void {
  assertMainLoop();
  const { 'qom-type': qomType, id, ...props } = args as { 'qom-type': string; id: string } & Record<string, unknown>;
  checkId(id);
  if (qomType === 'iothread') checkIothreadProps(props);
  if (qomType === 'tls-creds-x509' || qomType === 'tls-creds-psk') checkTlsCredsProps(qomType, props as TlsCredsProps);
  if (objects.has(id)) throw QmpError.generic(`attempt to add duplicate property '${id}' to object (type 'container')`);
  const obj: UserObject = { id, qomType, props };
  objectsContainer().add(id, objectNode(obj));
  try {
    complete(obj);
  } catch (err) {
    objectsContainer().remove(id);
    throw err;
  }
  objects.set(id, obj);
}

/** What makes the object usable: loading credentials, starting an I/O context, building rules. */
function complete(obj: UserObject): void {
  const { id, props } = obj;
  switch (obj.qomType) {
    case 'iothread':
      checkThreadPool(props);
      addIothreadContext(id);
      break;
    case 'tls-creds-x509':
      obj.tlsCreds = loadX509(id, props as TlsCredsProps);
      break;
    case 'tls-creds-psk':
      obj.tlsCreds = loadPsk(id, props as TlsCredsProps);
      break;
    case 'authz-simple':
      obj.authz = { type: 'simple', identity: String(props.identity) };
      break;
    case 'authz-list': {
      const rules = (props.rules ?? []) as Array<Omit<AuthzRule, 'format'> & { format?: AuthzRule['format'] }>;
      obj.authz = {
        type: 'list',
        policy: props.policy === 'allow' ? 'allow' : 'deny',
        rules: rules.map((r) => ({ match: r.match, policy: r.policy, format: r.format ?? 'exact' })),
      };
      break;
    }
  }
}

/** The credentials of a tls-creds object, for a user of the given endpoint; errors as QEMU words them. */
export function tlsCredsFor(id: string, endpoint: 'server' | 'client'): TlsCredentials {
  assertMainLoop();
  const obj = objects.get(id);
  if (!obj) throw QmpError.generic(`No TLS credentials with id '${id}'`);
  if (!obj.tlsCreds) throw QmpError.generic(`Object with id '${id}' is not TLS credentials`);
  if (obj.tlsCreds.endpoint !== endpoint) throw QmpError.generic(`Expected TLS credentials for a ${endpoint} endpoint`);
  return obj.tlsCreds;
}

/** The rules of an authz object, looked up when a peer is checked: undefined when there is none with that id. */
export function authzRulesOf(id: string): AuthzRules | undefined {
  assertMainLoop();
  return objects.get(id)?.authz;
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
  objectsContainer().remove(id);
}

export function objectTypesHelp(): string {
  return `List of user creatable objects:\n${OBJECT_TYPES.map((t) => `  ${t}`).join('\n')}\n`;
}
