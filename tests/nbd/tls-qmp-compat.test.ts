/**
 * TLS credentials and authz objects, and the NBD server's use of them, in
 * the same QMP session against qbd and qemu-storage-daemon: errors must
 * match to the letter (missing files, bad certificates, wrong endpoint,
 * objects that are not credentials), and deleting credentials the server
 * uses is allowed in both.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff } from '../helpers/compare';
import { tempDir, type Flavour } from '../helpers/daemons';
import { qmpSession } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';
import { makePki, type TestPki } from '../../bench/pki';

const ready = toolAvailable('certtool') && toolAvailable('qemu-storage-daemon');

let root: string;
let pki: TestPki;

function add(qomType: string, id: string, props: Record<string, unknown>): string {
  return JSON.stringify({ execute: 'object-add', arguments: { 'qom-type': qomType, id, ...props } });
}

function steps(): string[] {
  const bad = path.join(root, 'bad');
  return [
    add('tls-creds-x509', 'x0', { endpoint: 'server' }),
    add('tls-creds-x509', 'x0', { dir: path.join(root, 'nonexistent') }),
    add('tls-creds-x509', 'x0', { dir: pki.clientDir, endpoint: 'server' }),
    add('tls-creds-x509', 'x0', { dir: pki.serverDir, loaded: true }),
    add('tls-creds-x509', 'x0', { dir: path.join(bad, 'leaf-as-ca'), endpoint: 'server' }),
    add('tls-creds-x509', 'x0', { dir: path.join(bad, 'other-ca'), endpoint: 'server' }),
    add('tls-creds-x509', 'x0', { dir: path.join(bad, 'garbage-cert'), endpoint: 'server' }),
    // The default endpoint is the client: a server's directory loads, without the server's files.
    add('tls-creds-x509', 'x9', { dir: path.join(bad, 'other-ca') }),
    add('tls-creds-x509', 'x0', { dir: pki.serverDir, endpoint: 'server', priority: 'NORMAL', 'verify-peer': true, 'sanity-check': true }),
    add('tls-creds-x509', 'x1', { dir: pki.clientDir, endpoint: 'client' }),
    add('tls-creds-x509', 'x2', { dir: pki.noCertDir, endpoint: 'client' }),
    add('tls-creds-x509', 'x3', { dir: path.join(bad, 'other-ca'), endpoint: 'server', 'sanity-check': false }),
    add('tls-creds-x509', 'x0', { dir: pki.serverDir }),
    add('tls-creds-psk', 'p0', { dir: pki.serverDir, endpoint: 'server' }),
    add('tls-creds-psk', 'p0', { dir: pki.pskServerDir }),
    add('tls-creds-psk', 'p0', { dir: pki.pskServerDir, loaded: false }),
    add('tls-creds-psk', 'p0', { dir: pki.pskServerDir, endpoint: 'server' }),
    add('tls-creds-psk', 'p1', { dir: pki.pskServerDir, username: 'bob' }),
    add('tls-creds-psk', 'p2', { dir: pki.pskServerDir, endpoint: 'server', username: 'bob' }),
    add('authz-simple', 'a0', {}),
    add('authz-list', 'a0', { policy: 'allow', rules: [{ match: 'CN=*', policy: 'deny', format: 'glob' }] }),
    add('authz-simple', 'a1', { identity: 'alice' }),
    add('authz-simple', '1bad', { identity: 'alice' }),
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"nope"}}',
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"a0"}}',
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"x1"}}',
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"p1"}}',
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"x0","tls-authz":"not-yet"}}',
    '{"execute":"object-del","arguments":{"id":"x0"}}',
    '{"execute":"object-del","arguments":{"id":"x0"}}',
    '{"execute":"nbd-server-stop"}',
    '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"p0","tls-authz":"a1"}}',
    '{"execute":"object-del","arguments":{"id":"a1"}}',
    '{"execute":"object-del","arguments":{"id":"p0"}}',
    '{"execute":"nbd-server-stop"}',
  ];
}

async function session(flavour: Flavour): Promise<unknown[]> {
  const { replies } = await qmpSession(flavour, steps(), {
    prefix: 'qbd-tls-compat-',
    comparable: (reply, dir) => normalise(normalise(reply, dir), root),
  });
  return replies;
}

/** Directories whose certificates QEMU's sanity checks refuse. */
function makeBadDirs(): void {
  const bad = path.join(root, 'bad');
  const leaf = path.join(bad, 'leaf-as-ca');
  fs.mkdirSync(leaf, { recursive: true });
  fs.copyFileSync(path.join(pki.clientDir, 'client-cert.pem'), path.join(leaf, 'ca-cert.pem'));
  fs.copyFileSync(path.join(pki.serverDir, 'server-cert.pem'), path.join(leaf, 'server-cert.pem'));
  fs.copyFileSync(path.join(pki.serverDir, 'server-key.pem'), path.join(leaf, 'server-key.pem'));
  const other = path.join(bad, 'other-ca');
  fs.mkdirSync(other);
  fs.copyFileSync(path.join(pki.wrongCaDir, 'ca-cert.pem'), path.join(other, 'ca-cert.pem'));
  fs.copyFileSync(path.join(pki.serverDir, 'server-cert.pem'), path.join(other, 'server-cert.pem'));
  fs.copyFileSync(path.join(pki.serverDir, 'server-key.pem'), path.join(other, 'server-key.pem'));
  const garbage = path.join(bad, 'garbage-cert');
  fs.mkdirSync(garbage);
  fs.copyFileSync(path.join(pki.serverDir, 'ca-cert.pem'), path.join(garbage, 'ca-cert.pem'));
  fs.writeFileSync(path.join(garbage, 'server-cert.pem'), 'not a certificate\n');
  fs.copyFileSync(path.join(pki.serverDir, 'server-key.pem'), path.join(garbage, 'server-key.pem'));
}

describe.skipIf(!ready)('TLS objects and the NBD server over QMP, against the reference', () => {
  beforeAll(() => {
    root = tempDir('qbd-tls-pki-');
    pki = makePki(root);
    makeBadDirs();
  }, 60_000);
  afterAll(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('answers every step as the reference does', async () => {
    const [ours, theirs] = await Promise.all([session('qbd'), session('qsd')]);
    if (process.env.DUMP) fs.writeFileSync(process.env.DUMP, JSON.stringify({ ours, theirs }, null, 1));
    const diffs = ours.flatMap((r, i) => structuralDiff(r, theirs[i]).map((d) => `step ${i} ${steps()[i]}: ${d}`));
    expect(diffs).toEqual([]);
    // The session did reach the interesting replies.
    expect(JSON.stringify(theirs)).toContain('is not TLS credentials');
    expect(JSON.stringify(theirs)).toContain('Expected TLS credentials for a server endpoint');
  }, 60_000);
});
