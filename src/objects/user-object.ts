/**
 * A user-creatable object as the objects registry keeps it, and the checks
 * that both object-add and qom-set apply to an iothread's thread pool.
 *
 * Global state: objects live on the main loop.
 */
import { QmpError } from '../qmp/errors';
import type { AuthzRules } from '../crypto/authz';
import type { TlsCredentials } from '../crypto/tls-credentials';

export interface UserObject {
  id: string;
  qomType: string;
  props: Record<string, unknown>;
  tlsCreds?: TlsCredentials;
  authz?: AuthzRules;
}

/** What qom-get shows for an iothread property never set. */
export const IOTHREAD_DEFAULTS: Readonly<Record<string, number>> = { 'thread-pool-max': 64 };

const INT_MAX = 2147483647n;

/** The thread pool's bounds, checked whenever either changes. */
export function checkThreadPool(props: Record<string, unknown>): void {
  const min = BigInt((props['thread-pool-min'] as number | undefined) ?? 0);
  const max = BigInt((props['thread-pool-max'] as number | undefined) ?? IOTHREAD_DEFAULTS['thread-pool-max']!);
  if (min > max || max === 0n || min > INT_MAX || max > INT_MAX) throw QmpError.generic('bad thread-pool-min/thread-pool-max values');
}

