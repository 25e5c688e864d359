/**
 * The pure parts of TLS: authz rules matched as QEMU's authz-list matches
 * them (fnmatch without flags), and which protocol versions a GnuTLS
 * priority string allows.
 */
import { describe, expect, it } from 'vitest';
import { authzAllows, globToRegExp } from '../../src/crypto/authz';
import { tlsVersionRange } from '../../src/crypto/tls-options';

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
});
