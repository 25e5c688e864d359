/**
 * Types the strings of key=value command-line options against the schema,
 * as QEMU's keyval input visitor does: booleans from on/off/yes/no/true/false,
 * integers in decimal, octal or hex, sizes with k/M/G/T/P/E suffixes.
 */
import { QmpError } from '../qmp/errors';
import type { KeyvalTyping } from '../qmp/schema/visitor';

const SIZE_SUFFIX: Record<string, number> = { b: 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };

/** QEMU's qemu_strtosz(): a number, possibly with a fraction, and an optional binary suffix. */
export function parseSize(text: string): bigint | undefined {
  const m = /^\s*(0x[0-9a-f]+|\d+(?:\.\d+)?)\s*([bkmgtpe])?$/i.exec(text);
  if (!m) return undefined;
  const shift = SIZE_SUFFIX[(m[2] ?? 'b').toLowerCase()]!;
  if (m[1]!.toLowerCase().startsWith('0x')) {
    if (m[2]) return undefined;
    return BigInt(m[1]!);
  }
  const [whole, frac = ''] = m[1]!.split('.');
  if (frac && shift === 0) return undefined;
  const scale = 1n << BigInt(shift);
  const value = BigInt(whole!) * scale + (frac ? (BigInt(frac) * scale) / 10n ** BigInt(frac.length) : 0n);
  return value < 2n ** 64n ? value : undefined;
}

function toNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

export const keyvalTyping: KeyvalTyping = {
  bool(text, name) {
    if (['on', 'yes', 'true', 'y'].includes(text)) return true;
    if (['off', 'no', 'false', 'n'].includes(text)) return false;
    throw QmpError.generic(`Parameter '${name}' expects 'on' or 'off'`);
  },
  int(text, name, type) {
    if (type === 'size') {
      const v = parseSize(text);
      if (v === undefined) {
        throw QmpError.generic(`Parameter '${name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`);
      }
      return toNumber(v);
    }
    if (!/^[-+]?(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.test(text)) throw QmpError.generic(`Parameter '${name}' expects integer`);
    const neg = text.startsWith('-');
    const body = text.replace(/^[-+]/, '');
    let v = body.toLowerCase().startsWith('0x') ? BigInt(body) : body.length > 1 && body.startsWith('0') ? BigInt('0o' + body.slice(1)) : BigInt(body);
    if (neg) v = -v;
    return toNumber(v);
  },
  number(text, name) {
    const v = Number(text);
    if (text.trim() === '' || Number.isNaN(v)) throw QmpError.generic(`Parameter '${name}' expects a number`);
    return v;
  },
};
