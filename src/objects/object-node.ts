/**
 * A user-creatable object as a QOM node: its properties read and written
 * the way the reference's are (qom-get, qom-set). Values set later apply to
 * later users, as in the reference: an NBD server that already took TLS
 * credentials keeps what it took; an authz object is read at each check.
 *
 * Global state: called by the QOM commands on the main loop.
 */
import { QmpError } from '../qmp/errors';
import type { PropertyAccessor, QomNode } from '../qom/tree';
import type { AuthzRule } from '../crypto/authz';
import type { TlsCredentials } from '../crypto/tls-credentials';
import { checkThreadPool, IOTHREAD_DEFAULTS, type UserObject } from './user-object';

const INT64_MAX = 9223372036854775807n;

/** event-loop-base's integer properties: non-negative, kept even when the thread-pool check then fails (as the reference does). */
function eventLoopInt(obj: UserObject, name: string): PropertyAccessor {
  return {
    schemaType: 'int',
    get: () => obj.props[name] ?? IOTHREAD_DEFAULTS[name] ?? 0,
    set: (value) => {
      if (BigInt(value as number) < 0n) throw QmpError.generic(`${name} value must be in range [0, ${INT64_MAX}]`);
      obj.props[name] = value;
      if (name === 'thread-pool-min' || name === 'thread-pool-max') checkThreadPool(obj.props);
    },
  };
}

/** A TLS credentials property that later users see: the credentials are replaced, not changed under a user that holds them. */
function tlsSetting(obj: UserObject, name: string, schemaType: string, dflt: unknown, apply?: (c: TlsCredentials, v: unknown) => void): PropertyAccessor {
  return {
    schemaType,
    get: () => obj.props[name] ?? dflt,
    set: (value) => {
      obj.props[name] = value;
      if (apply && obj.tlsCreds) {
        const copy = { ...obj.tlsCreds };
        apply(copy, value);
        obj.tlsCreds = copy;
      }
    },
  };
}

function readOnly(get: () => unknown): PropertyAccessor {
  return { get };
}

function accessors(obj: UserObject): Record<string, PropertyAccessor> {
  switch (obj.qomType) {
    case 'iothread':
      return Object.fromEntries(['thread-pool-min', 'aio-max-batch', 'thread-pool-max', 'poll-max-ns', 'poll-grow', 'poll-shrink'].map((n) => [n, eventLoopInt(obj, n)]));
    case 'authz-simple':
      return {
        identity: {
          schemaType: 'str',
          get: () => obj.props.identity,
          set: (value) => {
            obj.props.identity = value;
            obj.authz = { type: 'simple', identity: value as string };
          },
        },
      };
    case 'authz-list': {
      const list = (): Extract<NonNullable<UserObject['authz']>, { type: 'list' }> => obj.authz as Extract<NonNullable<UserObject['authz']>, { type: 'list' }>;
      return {
        policy: {
          schemaType: 'QAuthZListPolicy',
          get: () => list().policy,
          set: (value) => {
            obj.props.policy = value;
            list().policy = value as 'allow' | 'deny';
          },
        },
        rules: {
          schemaType: ['QAuthZListRule'],
          get: () => obj.props.rules ?? [],
          set: (value) => {
            const rules = value as Array<Omit<AuthzRule, 'format'> & { format?: AuthzRule['format'] }>;
            obj.props.rules = rules;
            list().rules = rules.map((r) => ({ match: r.match, policy: r.policy, format: r.format ?? 'exact' }));
          },
        },
      };
    }
    case 'tls-creds-x509':
    case 'tls-creds-psk': {
      const common: Record<string, PropertyAccessor> = {
        endpoint: tlsSetting(obj, 'endpoint', 'QCryptoTLSCredsEndpoint', 'client', (c, v) => (c.endpoint = v as TlsCredentials['endpoint'])),
        dir: tlsSetting(obj, 'dir', 'str', ''),
        'verify-peer': tlsSetting(obj, 'verify-peer', 'bool', true, (c, v) => (c.verifyPeer = v as boolean)),
        priority: tlsSetting(obj, 'priority', 'str', '', (c, v) => (c.priority = v as string)),
        loaded: readOnly(() => true),
      };
      if (obj.qomType === 'tls-creds-psk') {
        common.username = tlsSetting(obj, 'username', 'str', '', (c, v) => {
          if (c.type === 'psk') c.username = v as string;
        });
      } else {
        common['sanity-check'] = tlsSetting(obj, 'sanity-check', 'bool', true);
        common.passwordid = tlsSetting(obj, 'passwordid', 'str', '');
      }
      return common;
    }
    default:
      return {};
  }
}

export function objectNode(obj: UserObject): QomNode {
  const table = accessors(obj);
  return {
    typeName: obj.qomType,
    accessor: (property) => table[property],
  };
}
