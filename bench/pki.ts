/**
 * Certificates for the TLS benchmark and tests, made with GnuTLS's
 * certtool, laid out as QEMU and libnbd read them: a directory per party
 * with ca-cert.pem and the party's server-cert.pem/server-key.pem or
 * client-cert.pem/client-key.pem. Also keys.psk files for PSK.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface TestPki {
  /** ca-cert.pem, server-cert.pem, server-key.pem. */
  serverDir: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem for CLIENT_DN. */
  clientDir: string;
  /** A client certificate from the same CA with another name (INTRUDER_DN). */
  intruderDir: string;
  /** A client whose certificate and CA are another CA's. */
  wrongCaDir: string;
  /** Only ca-cert.pem: a client that has no certificate to show. */
  noCertDir: string;
  /** keys.psk with alice and bob, for a PSK server. */
  pskServerDir: string;
  /** libnbd's PSK files: one user each, or alice with a wrong key. */
  pskFiles: { alice: string; bob: string; aliceWrongKey: string };
  /** A client-side tls-creds-psk directory for alice. */
  pskClientDir: string;
}

/** The subject of the client certificate, as QEMU 7.2 hands it to tls-authz (certificate order). */
export const CLIENT_DN = 'C=GB,ST=London,L=London,O=Example Org,CN=client.example.com';

const ALICE_KEY = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
const BOB_KEY = '60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752';

function certtool(args: string[]): void {
  execFileSync('certtool', args, { stdio: 'ignore' });
}

function template(dir: string, name: string, lines: string[]): string {
  const p = path.join(dir, `${name}.info`);
  fs.writeFileSync(p, `${lines.join('\n')}\n`);
  return p;
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}-key.pem`);
  const cert = path.join(dir, `${name}-cert.pem`);
  certtool(['--generate-privkey', '--key-type=ecdsa', '--outfile', key]);
  certtool(['--generate-self-signed', '--load-privkey', key, '--template', template(dir, name, [`cn = ${name}`, 'ca', 'cert_signing_key', 'expiration_days = 30']), '--outfile', cert]);
  return { cert, key };
}

function makeLeaf(dir: string, ca: { cert: string; key: string }, role: 'server' | 'client', fields: string[]): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(ca.cert, path.join(dir, 'ca-cert.pem'));
  const key = path.join(dir, `${role}-key.pem`);
  certtool(['--generate-privkey', '--key-type=ecdsa', '--outfile', key]);
  const info = template(dir, role, [...fields, role === 'server' ? 'tls_www_server' : 'tls_www_client', 'encryption_key', 'signing_key', 'expiration_days = 30']);
  certtool(['--generate-certificate', '--load-privkey', key, '--load-ca-certificate', ca.cert, '--load-ca-privkey', ca.key, '--template', info, '--outfile', path.join(dir, `${role}-cert.pem`)]);
  fs.rmSync(info);
}

export function makePki(root: string): TestPki {
  const caDir = path.join(root, 'ca');
  fs.mkdirSync(caDir, { recursive: true });
  const ca = makeCa(caDir, 'Test CA');
  const other = makeCa(caDir, 'Other CA');
  const pki: TestPki = {
    serverDir: path.join(root, 'server'),
    clientDir: path.join(root, 'client'),
    intruderDir: path.join(root, 'intruder'),
    wrongCaDir: path.join(root, 'wrong-ca'),
    noCertDir: path.join(root, 'no-cert'),
    pskServerDir: path.join(root, 'psk-server'),
    pskClientDir: path.join(root, 'psk-client'),
    pskFiles: { alice: path.join(root, 'alice.psk'), bob: path.join(root, 'bob.psk'), aliceWrongKey: path.join(root, 'alice-wrong.psk') },
  };
  makeLeaf(pki.serverDir, ca, 'server', ['organization = Example Org', 'cn = localhost', 'dns_name = localhost', 'ip_address = 127.0.0.1']);
  makeLeaf(pki.clientDir, ca, 'client', ['country = GB', 'state = London', 'locality = London', 'organization = Example Org', 'cn = client.example.com']);
  makeLeaf(pki.intruderDir, ca, 'client', ['organization = Example Org', 'cn = intruder.example.com']);
  makeLeaf(pki.wrongCaDir, other, 'client', ['organization = Example Org', 'cn = client.example.com']);
  fs.mkdirSync(pki.noCertDir);
  fs.copyFileSync(ca.cert, path.join(pki.noCertDir, 'ca-cert.pem'));
  fs.mkdirSync(pki.pskServerDir);
  fs.writeFileSync(path.join(pki.pskServerDir, 'keys.psk'), `alice:${ALICE_KEY}\nbob:${BOB_KEY}\n`);
  fs.mkdirSync(pki.pskClientDir);
  fs.writeFileSync(path.join(pki.pskClientDir, 'keys.psk'), `alice:${ALICE_KEY}\n`);
  fs.writeFileSync(pki.pskFiles.alice, `alice:${ALICE_KEY}\n`);
  fs.writeFileSync(pki.pskFiles.bob, `bob:${BOB_KEY}\n`);
  fs.writeFileSync(pki.pskFiles.aliceWrongKey, `alice:${BOB_KEY}\n`);
  return pki;
}
