/**
 * The transmission flags of an export, derived once from what it can do:
 * a flag is set exactly when the server implements what it advertises.
 */
import type { NbdExportEntry } from './messages';
import { TFLAG } from './protocol';

export function transmissionFlags(entry: NbdExportEntry): number {
  let flags = TFLAG.HAS_FLAGS | TFLAG.SEND_FLUSH | TFLAG.SEND_FUA | TFLAG.SEND_DF | TFLAG.SEND_CACHE;
  if (entry.writable) flags |= TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES | TFLAG.SEND_FAST_ZERO;
  else flags |= TFLAG.READ_ONLY;
  // One shared graph per export and no per-connection cache: a flush on any connection covers writes of all.
  if (entry.multiConn) flags |= TFLAG.CAN_MULTI_CONN;
  return flags;
}
