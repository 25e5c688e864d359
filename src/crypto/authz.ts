/**
 * Authorization rules as QEMU's authz objects hold them, and the check of an
 * identity against them: `authz-simple` allows one identity, `authz-list`
 * walks its rules in order and the first match decides, else its policy.
 * Glob rules match as fnmatch(3) with no flags: `*` and `?` also match `/`
 * and a leading `.`.
 */

export type AuthzPolicy = 'allow' | 'deny';

export interface AuthzRule {
  match: string;
  policy: AuthzPolicy;
  format: 'exact' | 'glob';
}

export type AuthzRules = { type: 'simple'; identity: string } | { type: 'list'; policy: AuthzPolicy; rules: AuthzRule[] };

/** fnmatch(3) pattern, flags 0, as a regular expression. */
export function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '\\' && i + 1 < pattern.length) re += escapeRe(pattern[++i]!);
    else if (c === '[') {
      const end = bracketEnd(pattern, i);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/\\/g, '\\\\').replace(/\]/g, '\\]')}]`;
      i = end;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`);
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** Index of the `]` closing the bracket expression opened at `start`, or -1. */
function bracketEnd(pattern: string, start: number): number {
  let i = start + 1;
  if (pattern[i] === '!' || pattern[i] === '^') i++;
  // A `]` right after the opening (and negation) is a member, not the end.
  if (pattern[i] === ']') i++;
  for (; i < pattern.length; i++) if (pattern[i] === ']') return i;
  return -1;
}

export function authzAllows(rules: AuthzRules, identity: string): boolean {
  if (rules.type === 'simple') return rules.identity === identity;
  for (const rule of rules.rules) {
    const hit = rule.format === 'glob' ? globToRegExp(rule.match).test(identity) : rule.match === identity;
    if (hit) return rule.policy === 'allow';
  }
  return rules.policy === 'allow';
}
