/**
 * Loading `tls-creds-x509` and `tls-creds-psk` objects: the files QEMU reads
 * from `dir`, in its order, with its errors, and for x509 its sanity checks
 * (dates, basic constraints, key usage, purpose, and that the certificate
 * chains to the CA). The result is plain data (src/crypto/tls-credentials.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as tls from 'node:tls';
import { strerror } from '../common/errno';
import { assertMainLoop } from '../common/thread-context';
import { QmpError } from '../qmp/errors';
import { parsePskKeys, type PskCredentials, type TlsEndpoint, type X509Credentials } from '../crypto/tls-credentials';
import { certificateInfo, pemBlocks, PURPOSE } from '../crypto/x509-info';

export interface TlsCredsProps {
  dir?: string;
  endpoint?: TlsEndpoint;
  'verify-peer'?: boolean;
  priority?: string;
  loaded?: boolean;
  'sanity-check'?: boolean;
  passwordid?: string;
  username?: string;
}

/** GnuTLS's words for a PEM file it could not decode, and for one without a PEM header. */
const BASE64_ERROR = 'Base64 decoding error.';
const NO_PEM_HEADER = 'Base64 unexpected header error.';

/** The path of FILE in the credentials directory, or undefined when an optional file is absent. */
function credsPath(dir: string, file: string, required: boolean): string | undefined {
  const p = path.join(dir, file);
  try {
    fs.accessSync(p, fs.constants.R_OK);
    return p;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    throw QmpError.generic(`Unable to access credentials ${p}: ${strerror(code)}`);
  }
}

function read(p: string | undefined): string | undefined {
  return p === undefined ? undefined : fs.readFileSync(p, 'latin1');
}

/** What setting the properties refuses, before the object exists: `loaded` is read-only. */
export function checkTlsCredsProps(type: string, props: TlsCredsProps): void {
  if (props.loaded !== undefined) throw QmpError.generic(`Property '${type}.loaded' is not writable`);
}

function commonChecks(type: string, props: TlsCredsProps): string {
  checkTlsCredsProps(type, props);
  if (props.dir === undefined) throw QmpError.generic(`Missing 'dir' property value`);
  return props.dir;
}

// ---- x509 sanity checks -------------------------------------------------------

type Role = 'server' | 'client' | 'CA';

function checkCertificate(pem: string, file: string, isServer: boolean, isCA: boolean): void {
  const info = certificateInfo(pem);
  const role: Role = isCA ? 'CA' : isServer ? 'server' : 'client';
  const now = Date.now();
  if (info.notAfter.getTime() < now) throw QmpError.generic(`The ${role} certificate ${file} has expired`);
  if (info.notBefore.getTime() > now) throw QmpError.generic(`The ${role} certificate ${file} is not yet active`);
  const bc = info.basicConstraints;
  if (bc?.ca === true && !isCA) throw QmpError.generic(`The certificate ${file} basic constraints show a CA, but we need one for a ${isServer ? 'server' : 'client'}`);
  if (bc?.ca === false && isCA) throw QmpError.generic(`The certificate ${file} basic constraints do not show a CA`);
  if (!bc && isCA) throw QmpError.generic(`The certificate ${file} is missing basic constraints for a CA`);
  // QEMU 7.2 holds only a CA's key usage to account; a leaf's is left to the TLS library at handshake time.
  const ku = info.keyUsage;
  if (isCA && ku?.critical && !ku.keyCertSign) throw QmpError.generic(`Certificate ${file} usage does not permit certificate signing`);
  const purposes = info.purposes;
  if (!isCA && purposes?.critical) {
    const want = isServer ? PURPOSE.SERVER : PURPOSE.CLIENT;
    if (!purposes.oids.includes(want) && !purposes.oids.includes(PURPOSE.ANY)) {
      throw QmpError.generic(`Certificate ${file} purpose does not allow use with a TLS ${isServer ? 'server' : 'client'}`);
    }
  }
}

function parse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function sanityCheck(isServer: boolean, caFile: string, certFile: string | undefined): void {
  const kind = isServer ? 'server' : 'client';
  let cert: X509Certificate | undefined;
  let certPem: string | undefined;
  if (certFile !== undefined) {
    certPem = pemBlocks(read(certFile)!)[0];
    if (certPem === undefined) throw QmpError.generic(`Unable to import ${kind} certificate ${certFile}: ${NO_PEM_HEADER}`);
    cert = parse(certPem);
    if (!cert) throw QmpError.generic(`Unable to import ${kind} certificate ${certFile}: ${BASE64_ERROR}`);
  }
  const caPems = pemBlocks(read(caFile)!);
  const cas = caPems.map(parse);
  if (caPems.length === 0 || cas.some((c) => !c)) throw QmpError.generic(`Unable to import CA certificate list ${caFile}`);
  if (certPem !== undefined) checkCertificate(certPem, certFile!, isServer, false);
  for (const pem of caPems) checkCertificate(pem, caFile, isServer, true);
  if (cert && !cas.some((ca) => ca && cert.checkIssued(ca) && cert.verify(ca.publicKey))) {
    throw QmpError.generic(`Our own certificate ${certFile} failed validation against ${caFile}: The certificate hasn't got a known issuer`);
  }
}

export function loadX509(id: string, props: TlsCredsProps): X509Credentials {
  assertMainLoop();
  const dir = commonChecks('tls-creds-x509', props);
  // QEMU's default endpoint is the client.
  const endpoint = props.endpoint ?? 'client';
  const isServer = endpoint === 'server';
  const caFile = credsPath(dir, 'ca-cert.pem', true)!;
  let crlFile: string | undefined;
  let certFile: string | undefined;
  let keyFile: string | undefined;
  let dhFile: string | undefined;
  if (isServer) {
    crlFile = credsPath(dir, 'ca-crl.pem', false);
    certFile = credsPath(dir, 'server-cert.pem', true);
    keyFile = credsPath(dir, 'server-key.pem', true);
    dhFile = credsPath(dir, 'dh-params.pem', false);
  } else {
    certFile = credsPath(dir, 'client-cert.pem', false);
    keyFile = credsPath(dir, 'client-key.pem', false);
  }
  if (props['sanity-check'] !== false) sanityCheck(isServer, caFile, certFile);

  const creds: X509Credentials = { type: 'x509', id, endpoint, verifyPeer: props['verify-peer'] ?? true, caCert: read(caFile)! };
  if (props.priority !== undefined) creds.priority = props.priority;
  try {
    tls.createSecureContext({ ca: creds.caCert });
  } catch {
    throw QmpError.generic(`Cannot load CA certificate '${caFile}': ${BASE64_ERROR}`);
  }
  if (certFile !== undefined && keyFile !== undefined) {
    const cert = read(certFile)!;
    const key = read(keyFile)!;
    try {
      createPrivateKey(key);
    } catch (err) {
      const encrypted = /ENCRYPTED/.test(key) || (err as { code?: string }).code === 'ERR_MISSING_PASSPHRASE';
      // Encrypted keys need a secret object, and qbd has none to hold the password.
      throw QmpError.generic(`Cannot load certificate '${certFile}' & key '${keyFile}': ${encrypted ? 'Decryption has failed.' : BASE64_ERROR}`);
    }
    // A key that does not match the certificate is accepted here, as by the reference, and fails each handshake.
    creds.cert = cert;
    creds.key = key;
  }
  if (crlFile !== undefined) {
    creds.crl = read(crlFile)!;
    try {
      tls.createSecureContext({ ca: creds.caCert, crl: creds.crl });
    } catch {
      throw QmpError.generic(`Cannot load CRL '${crlFile}': ${BASE64_ERROR}`);
    }
  }
  if (dhFile !== undefined) creds.dhParams = read(dhFile)!;
  return creds;
}

export function loadPsk(id: string, props: TlsCredsProps): PskCredentials {
  assertMainLoop();
  const dir = commonChecks('tls-creds-psk', props);
  const endpoint = props.endpoint ?? 'client';
  const creds: PskCredentials = { type: 'psk', id, endpoint, verifyPeer: props['verify-peer'] ?? true, keys: {}, username: props.username ?? 'qemu' };
  if (props.priority !== undefined) creds.priority = props.priority;
  if (endpoint === 'server') {
    if (props.username !== undefined) throw QmpError.generic('username should not be set when endpoint=server');
    const dhFile = credsPath(dir, 'dh-params.pem', false);
    const pskFile = credsPath(dir, 'keys.psk', true)!;
    creds.keys = parsePskKeys(read(pskFile)!);
    creds.keysFile = pskFile;
    if (dhFile !== undefined) creds.dhParams = read(dhFile)!;
  } else {
    const pskFile = credsPath(dir, 'keys.psk', true)!;
    const keys = parsePskKeys(read(pskFile)!);
    const key = keys[creds.username];
    if (key === undefined) throw QmpError.generic(`Username ${creds.username} not found in PSK file ${pskFile}`);
    creds.keys = { [creds.username]: key };
  }
  return creds;
}
