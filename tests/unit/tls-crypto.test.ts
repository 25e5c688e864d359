/**
 * The pure parts of TLS: authz rules matched as QEMU's authz-list matches
 * them (fnmatch without flags), and which protocol versions a GnuTLS
 * priority string allows; certificate names and extensions as GnuTLS
 * reads them.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { authzAllows, globToRegExp } from '../../src/crypto/authz';
import { priorityValid, tlsVersionRange } from '../../src/crypto/tls-options';
import { certificateInfo } from '../../src/crypto/x509-info';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

describe('authz rules', () => {
  it('matches globs as fnmatch with no flags: * and ? cross / and a leading dot, brackets are sets', () => {
    const m = (p: string, s: string) => globToRegExp(p).test(s);
    expect(m('CN=*,O=Example', 'CN=a/b,O=Example')).toBe(true);
    expect(m('*', '.hidden')).toBe(true);
    expect(m('CN=host?', 'CN=host1')).toBe(true);
    expect(m('CN=host?', 'CN=host12')).toBe(false);
    expect(m('CN=[ab]x', 'CN=bx')).toBe(true);
    expect(m('CN=[!ab]x', 'CN=bx')).toBe(false);
    expect(m('CN=[a-c]x', 'CN=cx')).toBe(true);
    expect(m('a.b(c)+', 'a.b(c)+')).toBe(true);
    expect(m('a.b', 'axb')).toBe(false);
    expect(m('\\*', '*')).toBe(true);
    expect(m('\\*', 'x')).toBe(false);
    expect(m('[unclosed', '[unclosed')).toBe(true);
  });

  it('lets the first matching rule decide, else the policy', () => {
    const rules = {
      type: 'list' as const,
      policy: 'deny' as const,
      rules: [
        { match: 'CN=bad.example.com', policy: 'deny' as const, format: 'exact' as const },
        { match: 'CN=*.example.com', policy: 'allow' as const, format: 'glob' as const },
      ],
    };
    expect(authzAllows(rules, 'CN=good.example.com')).toBe(true);
    expect(authzAllows(rules, 'CN=bad.example.com')).toBe(false);
    expect(authzAllows(rules, 'CN=other.org')).toBe(false);
    expect(authzAllows({ ...rules, policy: 'allow' }, 'CN=other.org')).toBe(true);
    expect(authzAllows({ type: 'simple', identity: 'alice' }, 'alice')).toBe(true);
    expect(authzAllows({ type: 'simple', identity: 'alice' }, 'Alice')).toBe(false);
  });
});

describe('GnuTLS priority strings', () => {
  it('honours the version keywords and nothing else', () => {
    expect(tlsVersionRange(undefined)).toEqual({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' });
    expect(tlsVersionRange('NORMAL')).toEqual({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' });
    expect(tlsVersionRange('NORMAL:-VERS-TLS1.3')).toEqual({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    expect(tlsVersionRange('NORMAL:-VERS-ALL:+VERS-TLS1.3')).toEqual({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
    expect(tlsVersionRange('NORMAL:-VERS-ALL')).toEqual({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' });
  });

  it('refuses what GnuTLS refuses, and takes what it takes', () => {
    for (const ok of [undefined, 'NORMAL', '@SYSTEM', 'NORMAL:-VERS-TLS1.3', 'SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.2:%COMPAT', 'NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK', 'NONE:+VERS-TLS1.3:+AES-256-GCM:+AEAD:+GROUP-X25519:+SIGN-ALL:+CTYPE-X509']) {
      expect(priorityValid(ok), ok).toBe(true);
    }
    for (const bad of ['BOGUS', 'NORMAL:+BOGUS', 'NORMAL:VERS-TLS1.2', '', 'NORMAL:%bad']) expect(priorityValid(bad), bad).toBe(false);
  });
});

describe.skipIf(!toolAvailable('certtool'))('certificate names', () => {
  it('writes the subject with GnuTLS escaping, in certificate order (certtool shows the reverse)', () => {
    const dir = tempDir('qbd-x509-');
    try {
      const key = path.join(dir, 'key.pem');
      const cert = path.join(dir, 'cert.pem');
      const info = path.join(dir, 'cert.info');
      fs.writeFileSync(info, ['country = GB', 'organization = "Example, Inc."', 'unit = "R+D <lab>; #2"', 'cn = " padded "', 'ca', 'cert_signing_key', 'expiration_days = 2'].join('\n'));
      execFileSync('certtool', ['--generate-privkey', '--key-type=ecdsa', '--outfile', key], { stdio: 'ignore' });
      execFileSync('certtool', ['--generate-self-signed', '--load-privkey', key, '--template', info, '--outfile', cert], { stdio: 'ignore' });
      const shown = execFileSync('certtool', ['-i', '--infile', cert], { encoding: 'utf8' });
      const subject = /\tSubject: (.*)\n/.exec(shown)![1]!;
      const parsed = certificateInfo(fs.readFileSync(cert, 'utf8'));
      expect(parsed.subject.split(/(?<!\\),/).reverse().join(',')).toBe(subject);
      expect(parsed.subject.startsWith('C=GB,O=Example\\, Inc.,')).toBe(true);
      expect(parsed.basicConstraints).toEqual({ ca: true });
      expect(parsed.keyUsage).toMatchObject({ keyCertSign: true, critical: true });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
