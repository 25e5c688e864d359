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
  /** keys.psk: the key of each username, as hex. */
  keys: Record<string, string>;
  /** For a client: who it says it is (QEMU's default, `qemu`). */
  username: string;
}

export type TlsCredentials = X509Credentials | PskCredentials;
