/**
 * TLS credentials as plain data: what a `tls-creds-x509` or `tls-creds-psk`
 * object read from its directory, ready to cross a message port. Keys stay
 * in memory only; they are never logged.
 */

export type TlsEndpoint = 'server' | 'client';

interface CommonCredentials {
  /** The object's id, for messages. */
  id: string;
  endpoint: TlsEndpoint;
  verifyPeer: boolean;
  /** A GnuTLS priority string; see tlsVersionRange() for what qbd honours. */
  priority?: string;
  /** dh-params.pem, for a server. */
  dhParams?: string;
}

export interface X509Credentials extends CommonCredentials {
  type: 'x509';
  /** ca-cert.pem: the certificates a peer's must chain to. */
  caCert: string;
  /** ca-crl.pem, for a server. */
  crl?: string;
  /** server-cert.pem or client-cert.pem (optional for a client). */
  cert?: string;
  key?: string;
}

export interface PskCredentials extends CommonCredentials {
  type: 'psk';
  /** keys.psk as read when the object was created: the key of each username, as hex. */
  keys: Record<string, string>;
  /**
   * For a server: keys.psk itself, read again at each handshake as GnuTLS
   * does, so keys can be changed without a restart (and a file that has
   * become unreadable refuses every client, as in the reference).
   */
  keysFile?: string;
  /** For a client: who it says it is (QEMU's default, `qemu`). */
  username: string;
}

export type TlsCredentials = X509Credentials | PskCredentials;

/** keys.psk: one `username:hexkey` per line; the first line for a name counts. */
export function parsePskKeys(text: string): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const user = line.slice(0, colon);
    if (!(user in keys)) keys[user] = line.slice(colon + 1).trim();
  }
  return keys;
}
