/**
 * Node `tls` options built from plain credentials, for either endpoint: a
 * server upgrading an accepted socket (the NBD server's STARTTLS) or a
 * client connecting (an NBD client with endpoint=client credentials).
 * Usable in any thread.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as fs from 'node:fs';
import { parsePskKeys, type PskCredentials, type TlsCredentials } from './tls-credentials';

/** PSK suites first for PSK credentials: OpenSSL leaves them out unless asked. */
const PSK_CIPHERS = 'ECDHE-PSK:DHE-PSK:PSK:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

const VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
type Version = (typeof VERSIONS)[number];

/**
 * The protocol versions a GnuTLS priority string allows. Only its version
 * keywords (`-VERS-ALL`, `+VERS-TLS1.2`, `-VERS-TLS1.3`…) have a meaning
 * for OpenSSL; cipher and group keywords are kept but have no effect.
 */
export function tlsVersionRange(priority: string | undefined): { minVersion: Version; maxVersion: Version } {
  const allowed = new Set<Version>(VERSIONS);
  for (const token of (priority ?? '').split(':')) {
    const m = /^([-+!])VERS-(ALL|TLS-ALL|TLS1\.[0-3])$/.exec(token);
    if (!m) continue;
    const which: Version[] = m[2]!.endsWith('ALL') ? [...VERSIONS] : VERSIONS.filter((v) => v === `TLSv${m[2]!.slice(3)}`);
    for (const v of which) {
      if (m[1] === '+') allowed.add(v);
      else allowed.delete(v);
    }
  }
  const list = VERSIONS.filter((v) => allowed.has(v));
  // Nothing left would fail every handshake; GnuTLS then falls back to its defaults, and so does qbd.
  if (list.length === 0) return { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' };
  return { minVersion: list[0]!, maxVersion: list[list.length - 1]! };
}

/** GnuTLS's priority keywords, and the names its `+`, `-` and `!` modifiers take. */
const PRIORITY_BASES = new Set(['PERFORMANCE', 'NORMAL', 'LEGACY', 'PFS', 'SECURE', 'SECURE128', 'SECURE192', 'SECURE256', 'SUITEB128', 'SUITEB192', 'NONE']);
const PRIORITY_NAMES = new Set([
  // Ciphers.
  'AES-128-GCM', 'AES-256-GCM', 'AES-128-CCM', 'AES-256-CCM', 'AES-128-CCM-8', 'AES-256-CCM-8', 'AES-128-CBC', 'AES-256-CBC',
  'CHACHA20-POLY1305', 'CAMELLIA-128-GCM', 'CAMELLIA-256-GCM', 'CAMELLIA-128-CBC', 'CAMELLIA-256-CBC', '3DES-CBC', 'ARCFOUR-128',
  'GOST28147-TC26Z-CNT', 'NULL', 'CIPHER-ALL', 'CIPHER-GOST-ALL',
  // MACs.
  'SHA1', 'SHA256', 'SHA384', 'AEAD', 'MD5', 'GOST28147-TC26Z-IMIT', 'MAC-ALL', 'MAC-GOST-ALL',
  // Key exchange.
  'RSA', 'DHE-RSA', 'ECDHE-RSA', 'ECDHE-ECDSA', 'DHE-DSS', 'PSK', 'DHE-PSK', 'ECDHE-PSK', 'RSA-PSK', 'ANON-DH', 'ANON-ECDH',
  'SRP', 'SRP-RSA', 'SRP-DSS', 'VKO-GOST-12', 'KX-ALL', 'KX-GOST-ALL',
  // Others.
  'COMP-NULL', 'COMP-DEFLATE', 'COMP-ALL', 'CTYPE-X509', 'CTYPE-RAWPK', 'CTYPE-ALL', 'CTYPE-CLI-X509', 'CTYPE-SRV-X509',
  'CTYPE-CLI-RAWPK', 'CTYPE-SRV-RAWPK', 'CTYPE-CLI-ALL', 'CTYPE-SRV-ALL',
]);
const PRIORITY_FAMILIES = /^(VERS-(ALL|TLS-ALL|DTLS-ALL|SSL3\.0|TLS1\.[0-3]|DTLS0\.9|DTLS1\.[02])|GROUP-[A-Z0-9-]+|CURVE-[A-Z0-9-]+|SIGN-[A-Z0-9-]+)$/;

/**
 * Whether GnuTLS would take the priority string. The reference checks it
 * when a session starts ("Cannot set default TLS session priority …"), so a
 * bad one fails every handshake; qbd refuses the same strings.
 */
export function priorityValid(priority: string | undefined): boolean {
  if (priority === undefined) return true;
  const [base, ...rest] = priority.split(':');
  if (!base || !(PRIORITY_BASES.has(base) || base.startsWith('@'))) return false;
  return rest.every((token) => {
    if (token.startsWith('%')) return /^%[A-Z0-9_]+$/.test(token);
    const m = /^[-+!](.+)$/.exec(token);
    return m !== null && (PRIORITY_NAMES.has(m[1]!) || PRIORITY_BASES.has(m[1]!) || PRIORITY_FAMILIES.test(m[1]!));
  });
}

/** Built once per credentials object: parsing certificates and keys for every connection would be wasted work. */
const contexts = new WeakMap<TlsCredentials, tls.SecureContext>();

export function secureContextOf(creds: TlsCredentials): tls.SecureContext {
  let ctx = contexts.get(creds);
  if (!ctx) {
    ctx = buildSecureContext(creds);
    contexts.set(creds, ctx);
  }
  return ctx;
}

function buildSecureContext(creds: TlsCredentials): tls.SecureContext {
  if (!priorityValid(creds.priority)) throw new Error(`Cannot set default TLS session priority ${creds.priority}: The request is invalid.`);
  const opts: tls.SecureContextOptions = { ...tlsVersionRange(creds.priority) };
  if (creds.dhParams !== undefined && creds.endpoint === 'server') opts.dhparam = creds.dhParams;
  if (creds.type === 'x509') {
    opts.ca = creds.caCert;
    if (creds.cert !== undefined && creds.key !== undefined) {
      opts.cert = creds.cert;
      opts.key = creds.key;
    }
    if (creds.crl !== undefined) opts.crl = creds.crl;
  } else {
    opts.ciphers = PSK_CIPHERS;
  }
  return tls.createSecureContext(opts);
}

function pskKey(creds: PskCredentials, username: string): Buffer | null {
  let keys = creds.keys;
  if (creds.keysFile !== undefined) {
    try {
      keys = parsePskKeys(fs.readFileSync(creds.keysFile, 'latin1'));
    } catch {
      return null;
    }
  }
  const hex = keys[username];
  return hex === undefined ? null : Buffer.from(hex, 'hex');
}

/** TLSSocket takes a PSK callback too, though Node's typings list it only for servers and connect(). */
export type ServerSocketOptions = tls.TLSSocketOptions & { pskCallback?: (socket: tls.TLSSocket, identity: string) => Buffer | null };

/** Options for `new tls.TLSSocket(socket, …)` on the server side. */
export function serverTlsOptions(creds: TlsCredentials, onPskIdentity?: (username: string) => void): ServerSocketOptions {
  const opts: ServerSocketOptions = { isServer: true, secureContext: secureContextOf(creds) };
  if (creds.type === 'x509') {
    opts.requestCert = creds.verifyPeer;
    opts.rejectUnauthorized = creds.verifyPeer;
  } else {
    opts.pskCallback = (_socket, identity) => {
      onPskIdentity?.(identity);
      return pskKey(creds, identity);
    };
  }
  return opts;
}

/** Options for `tls.connect()` on the client side; `host` is the name the server's certificate must carry. */
export function clientTlsOptions(creds: TlsCredentials, host?: string): tls.ConnectionOptions {
  const opts: tls.ConnectionOptions = { secureContext: secureContextOf(creds) };
  if (host !== undefined && !net.isIP(host)) opts.servername = host;
  if (creds.type === 'x509') {
    opts.rejectUnauthorized = creds.verifyPeer;
    // QEMU checks the name only when it knows one.
    if (host === undefined) opts.checkServerIdentity = () => undefined;
  } else {
    const key = pskKey(creds, creds.username);
    opts.pskCallback = () => (key ? { psk: key, identity: creds.username } : null);
    opts.checkServerIdentity = () => undefined;
  }
  return opts;
}
