/**
 * The tls-creds option of an nbd node: the id of a TLS credentials object,
 * resolved on the main loop with QEMU's errors. TLS sessions are not built
 * yet: no object type of qbd is TLS credentials, so every id is refused
 * here. This is where the client's credentials come from once they exist.
 */
import { QmpError } from '../../../qmp/errors';
import { findObject } from '../../../objects/objects';

/** Object types that are TLS credentials (QEMU's TYPE_QCRYPTO_TLS_CREDS and its subtypes). */
const TLS_CREDS_TYPES: readonly string[] = [];

export function resolveTlsCreds(id: string): never {
  const obj = findObject(id);
  if (!obj) throw QmpError.generic(`No TLS credentials with id '${id}'`);
  if (!TLS_CREDS_TYPES.includes(obj.qomType)) throw QmpError.generic(`Object with id '${id}' is not TLS credentials`);
  throw QmpError.generic('TLS for NBD client connections is not supported yet');
}
