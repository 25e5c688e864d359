/**
 * The QOM types qbd implements, as qemu-storage-daemon 7.2 names and
 * describes them: each type's parent, whether it is abstract, the
 * interfaces it declares and the properties its class adds. Types qbd does
 * not implement are left out (docs/compatibility.md).
 *
 * The list is in the order the reference lists types (its type table's
 * hash order), so qom-list-types answers in the same order.
 *
 * Pure data and lookups, usable anywhere.
 */

export interface QomPropertyInfo {
  name: string;
  /** The property's QOM type string, as qom-list shows it (`int`, `string`, `child<iothread>`…). */
  type: string;
}

export interface QomType {
  name: string;
  parent?: string;
  abstract?: boolean;
  /** Interfaces the type itself declares; its subtypes inherit them. */
  interfaces?: string[];
  /** Properties this type's class adds, in the order qom-list shows them. */
  properties?: QomPropertyInfo[];
}

const int = (name: string): QomPropertyInfo => ({ name, type: 'int' });
const str = (name: string): QomPropertyInfo => ({ name, type: 'string' });
const bool = (name: string): QomPropertyInfo => ({ name, type: 'bool' });

const TYPES: readonly QomType[] = [
  { name: 'authz-simple', parent: 'authz', interfaces: ['user-creatable'], properties: [str('identity')] },
  { name: 'container', parent: 'object' },
  { name: 'interface', abstract: true },
  { name: 'iothread', parent: 'event-loop-base', properties: [int('poll-max-ns'), int('poll-grow'), int('poll-shrink')] },
  { name: 'authz', parent: 'object', abstract: true },
  { name: 'tls-creds-psk', parent: 'tls-creds', interfaces: ['user-creatable'], properties: [str('username'), bool('loaded')] },
  {
    name: 'tls-creds',
    parent: 'object',
    abstract: true,
    properties: [{ name: 'endpoint', type: 'QCryptoTLSCredsEndpoint' }, str('dir'), bool('verify-peer'), str('priority')],
  },
  { name: 'chardev-fd', parent: 'chardev', abstract: true },
  { name: 'chardev-null', parent: 'chardev' },
  { name: 'chardev-ringbuf', parent: 'chardev' },
  {
    name: 'event-loop-base',
    parent: 'object',
    abstract: true,
    interfaces: ['user-creatable'],
    properties: [int('thread-pool-min'), int('aio-max-batch'), int('thread-pool-max')],
  },
  {
    name: 'authz-list',
    parent: 'authz',
    interfaces: ['user-creatable'],
    properties: [
      { name: 'policy', type: 'QAuthZListPolicy' },
      { name: 'rules', type: 'QAuthZListRule' },
    ],
  },
  { name: 'chardev-stdio', parent: 'chardev-fd' },
  { name: 'chardev', parent: 'object', abstract: true },
  { name: 'user-creatable', parent: 'interface', abstract: true },
  {
    name: 'chardev-socket',
    parent: 'chardev',
    properties: [bool('connected'), { name: 'addr', type: 'SocketAddress' }],
  },
  { name: 'chardev-file', parent: 'chardev-fd' },
  { name: 'chardev-memory', parent: 'chardev-ringbuf' },
  { name: 'object', abstract: true, properties: [str('type')] },
  {
    name: 'tls-creds-x509',
    parent: 'tls-creds',
    interfaces: ['user-creatable'],
    properties: [bool('sanity-check'), str('passwordid'), bool('loaded')],
  },
];

const byName = new Map(TYPES.map((t) => [t.name, t]));

export function findType(name: string): QomType | undefined {
  return byName.get(name);
}

/** The type and its ancestors, the type first. */
function lineage(name: string): QomType[] {
  const out: QomType[] = [];
  for (let t = byName.get(name); t; t = t.parent === undefined ? undefined : byName.get(t.parent)) out.push(t);
  return out;
}

/** Whether a value of type `name` can be used as `target`: `target` is the type, an ancestor, or an interface it (or an ancestor) declares. */
export function typeImplements(name: string, target: string): boolean {
  for (const t of lineage(name)) {
    if (t.name === target) return true;
    for (const i of t.interfaces ?? []) if (typeImplements(i, target)) return true;
  }
  return false;
}

/** Object types, as opposed to interfaces: what can be instantiated or described by qom-list-properties. */
export function isObjectType(name: string): boolean {
  return lineage(name).some((t) => t.name === 'object');
}

/** Every property the type's class has, as qom-list shows them: `type` first, then each subtype's in turn. */
export function classProperties(name: string): QomPropertyInfo[] {
  return lineage(name)
    .reverse()
    .flatMap((t) => t.properties ?? []);
}

export interface TypeListing {
  name: string;
  abstract?: boolean;
  parent?: string;
}

/** qom-list-types: the types that implement `implementsName` (all when absent), abstract ones only when asked. */
export function listTypes(implementsName: string | undefined, includeAbstract: boolean): TypeListing[] {
  const out: TypeListing[] = [];
  for (const t of TYPES) {
    if (t.abstract && !includeAbstract) continue;
    if (implementsName !== undefined && !typeImplements(t.name, implementsName)) continue;
    const entry: TypeListing = { name: t.name };
    if (t.abstract) entry.abstract = true;
    if (t.parent !== undefined) entry.parent = t.parent;
    out.push(entry);
  }
  return out;
}
