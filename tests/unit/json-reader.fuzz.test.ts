import { describe, it, expect } from 'vitest';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { JsonStreamReader, type JsonReaderEvent, type JsonReaderLimits } from '../../src/qmp/json-reader';

/** mulberry32: small and seeded, so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Random = () => number;
const below = (random: Random, n: number): number => Math.floor(random() * n);
const pick = <T>(random: Random, items: readonly T[]): T => items[below(random, items.length)]!;

/** Text as bytes: every char of a "binary string" is one byte. */
const binary = (s: string): Buffer => Buffer.from(s, 'latin1');
const utf8AsBinary = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

interface Generated {
  /** The JSON text as a binary string. */
  text: string;
  /** The value the reader must deliver for it. */
  value: unknown;
}

const WHITESPACE = [' ', '\t', '\r', '\n'];
const space = (random: Random): string => (random() < 0.7 ? '' : pick(random, WHITESPACE).repeat(1 + below(random, 3)));

function genInteger(random: Random): Generated {
  switch (below(random, 5)) {
    case 0: {
      const n = below(random, 2000) - 1000;
      return { text: String(n), value: n };
    }
    case 1: {
      const n = Math.floor(random() * Number.MAX_SAFE_INTEGER) * (random() < 0.5 ? -1 : 1);
      return { text: String(n), value: n + 0 };
    }
    case 2: {
      // Beyond 2^53 but within int64/uint64: exact, as a BigInt.
      const big = random() < 0.5 ? 2n ** 53n + BigInt(below(random, 1e9)) : -(2n ** 63n) + BigInt(below(random, 1e9));
      return { text: big.toString(), value: big };
    }
    case 3: {
      // Beyond 64 bits: a double, as the reference does.
      const text = (random() < 0.5 ? '-' : '') + '1' + '0'.repeat(20 + below(random, 10)) + String(below(random, 10));
      return { text, value: Number(text) };
    }
    default:
      return { text: '-0', value: 0 };
  }
}

function genFloat(random: Random): Generated {
  let text = (random() < 0.3 ? '-' : '') + String(below(random, 1000)) + '.' + String(below(random, 1000));
  if (random() < 0.4) text += pick(random, ['e', 'E']) + pick(random, ['', '+', '-']) + String(below(random, 30));
  return { text, value: Number(text) };
}

function genPlainCharacter(random: Random): [string, string] {
  if (random() < 0.1) {
    const esc = pick(random, ['\\"', '\\\\', '\\/', '\\b', '\\f', '\\n', '\\r', '\\t']);
    return [esc, JSON.parse(`"${esc}"`) as string];
  }
  let ch: string;
  do ch = String.fromCharCode(0x20 + below(random, 0x5f));
  while (ch === '\\' || ch === '"');
  return [ch, ch];
}

/** A character for a string, as (text inside the quotes, decoded value). */
function genCharacter(random: Random, quote: string): [string, string] {
  switch (below(random, 9)) {
    case 0: {
      const esc = pick(random, ['\\"', "\\'", '\\\\', '\\/', '\\b', '\\f', '\\n', '\\r', '\\t']);
      return [esc, JSON.parse(`"${esc === "\\'" ? "'" : esc}"`) as string];
    }
    case 1: {
      let cp: number;
      do cp = below(random, 0x10000);
      while ((cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe);
      const hex = cp.toString(16).padStart(4, '0');
      return ['\\u' + (random() < 0.5 ? hex : hex.toUpperCase()), String.fromCodePoint(cp)];
    }
    case 2: {
      const cp = 0x10000 + below(random, 0xf0000 - 2);
      const s = String.fromCodePoint((cp & 0xfffe) === 0xfffe ? cp - 2 : cp);
      return [`\\u${s.charCodeAt(0).toString(16)}\\u${s.charCodeAt(1).toString(16)}`, s];
    }
    case 3: {
      const s = pick(random, ['\u00e9', '\u20ac', '\u{1F600}', '\u0416', '\u4e2d', '\u{10FFFD}']);
      return [utf8AsBinary(s), s];
    }
    case 4:
      return ['\xc0\x80', '\u0000'];
    default: {
      let ch: string;
      do ch = String.fromCharCode(0x20 + below(random, 0x5f));
      while (ch === '\\' || ch === quote);
      return [ch, ch];
    }
  }
}

/** Plain generation stays within what JSON.parse reads like the reference. */
let plain = false;

function genString(random: Random): Generated {
  const quote = plain || random() < 0.8 ? '"' : "'";
  let text = quote;
  let value = '';
  const length = below(random, 12);
  for (let i = 0; i < length; i++) {
    const [t, v] = plain && random() < 0.9 ? genPlainCharacter(random) : genCharacter(random, quote);
    text += t;
    value += v;
  }
  return { text: text + quote, value };
}

function genValue(random: Random, depth: number): Generated {
  const roll = below(random, depth > 4 ? 6 : 9);
  if (roll === 0 || (plain && roll === 1)) {
    if (!plain) return genInteger(random);
    const n = below(random, 2e9) - 1e9;
    return { text: String(n), value: n };
  }
  if (roll === 1) return genFloat(random);
  if (roll <= 3) return genString(random);
  if (roll === 4) {
    const kw = pick(random, ['true', 'false', 'null']);
    return { text: kw, value: JSON.parse(kw) as unknown };
  }
  if (roll === 5 || roll === 6) return genArray(random, depth + 1);
  return genObject(random, depth + 1);
}

function genArray(random: Random, depth: number): Generated {
  const items: Generated[] = [];
  const count = below(random, 5);
  for (let i = 0; i < count; i++) items.push(genValue(random, depth));
  const text = '[' + space(random) + items.map((g) => g.text + space(random)).join(',' + space(random)) + ']';
  return { text, value: items.map((g) => g.value) };
}

function genObject(random: Random, depth: number): Generated {
  const members: string[] = [];
  const value: Record<string, unknown> = {};
  const count = below(random, 5);
  for (let i = 0; i < count; i++) {
    const key = random() < 0.5 ? { text: `"k${i}"`, value: `k${i}` } : genString(random);
    if (Object.prototype.hasOwnProperty.call(value, key.value as string)) continue;
    const member = genValue(random, depth);
    Object.defineProperty(value, key.value as string, { value: member.value, writable: true, enumerable: true, configurable: true });
    members.push(key.text + space(random) + ':' + space(random) + member.text + space(random));
  }
  return { text: '{' + space(random) + members.join(',' + space(random)) + '}', value };
}

const INTERESTING = binary('{}[]:,"\'\\ \n\t\r\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xe2\xed\xef\xf0\xf4\xfe\xff-+.0123456789eEatrufnlsu%');

function mutate(random: Random, input: Buffer): Buffer {
  const bytes = [...input];
  const edits = 1 + below(random, 4);
  for (let e = 0; e < edits; e++) {
    const at = below(random, bytes.length + 1);
    const byte = random() < 0.7 ? INTERESTING[below(random, INTERESTING.length)]! : below(random, 256);
    switch (below(random, 5)) {
      case 0:
        bytes.splice(at, 0, byte);
        break;
      case 1:
        bytes.splice(at, 1);
        break;
      case 2:
        if (at < bytes.length) bytes[at] = byte;
        break;
      case 3: {
        const length = below(random, 8);
        bytes.splice(at, 0, ...bytes.slice(at, at + length));
        break;
      }
      default:
        bytes.length = Math.min(bytes.length, at);
    }
  }
  return Buffer.from(bytes);
}

function randomBytes(random: Random): Buffer {
  const length = below(random, 64);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = random() < 0.5 ? INTERESTING[below(random, INTERESTING.length)]! : below(random, 256);
  return out;
}

function read(chunks: Uint8Array[], limits?: Partial<JsonReaderLimits>): JsonReaderEvent[] {
  const events: JsonReaderEvent[] = [];
  const reader = new JsonStreamReader((ev) => events.push(ev), limits);
  for (const chunk of chunks) reader.push(chunk);
  return events;
}

function splitAtRandom(random: Random, all: Uint8Array): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < all.length; ) {
    const size = 1 + below(random, Math.min(all.length - at, 1 + below(random, 24)));
    chunks.push(all.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

const bytewise = (all: Uint8Array): Uint8Array[] => Array.from({ length: all.length }, (_, i) => all.subarray(i, i + 1));

const SMALL_LIMITS: JsonReaderLimits = { maxMessageBytes: 96, maxTokens: 24, maxDepth: 5 };
const SYNC = binary('\xff\n{"execute":"sync"}');

describe('JsonStreamReader under fuzzing', () => {
  it('delivers exactly the generated value for 3000 random valid texts, whole, split or byte by byte', () => {
    const random = prng(20240607);
    for (let n = 0; n < 3000; n++) {
      plain = n % 3 === 0;
      const generated = random() < 0.8 ? genObject(random, 0) : genValue(random, 0);
      const all = binary(space(random) + generated.text + ' ');
      const expected = [{ kind: 'value', value: generated.value }];
      expect(read([all]), generated.text).toEqual(expected);
      expect(read(splitAtRandom(random, all)), generated.text).toEqual(expected);
      if (n % 10 === 0) expect(read(bytewise(all)), generated.text).toEqual(expected);
    }
  });

  it('never throws on 10000 mutated or random inputs, gives the same events whatever the split, and resynchronises after 0xFF', () => {
    const random = prng(0xf022);
    const seeds = Array.from({ length: 64 }, (_, i) => {
      plain = i % 2 === 0;
      return binary(genObject(random, 0).text);
    });
    plain = false;
    seeds.push(binary('{"execute":"query-version","id":1}\n'), binary("{'execute':'x','arguments':{'a':[1,2.5e3,\"\\u00e9\"]}}"));
    for (let n = 0; n < 10_000; n++) {
      const input = random() < 0.85 ? mutate(random, pick(random, seeds)) : randomBytes(random);
      const limits = n % 2 === 0 ? undefined : SMALL_LIMITS;
      const label = `input #${n} ${JSON.stringify(input.toString('latin1'))} limits ${JSON.stringify(limits)}`;
      const whole = read([input], limits);
      expect(read(splitAtRandom(random, input), limits), label).toEqual(whole);
      if (n % 10 === 0) expect(read(bytewise(input), limits), label).toEqual(whole);
      for (const ev of whole) {
        if (ev.kind === 'error') expect(typeof ev.message, label).toBe('string');
      }

      // A 0xFF byte always makes a lexical error, which resets the reader:
      // whatever came before, the next command is read.
      const events = read([input, SYNC], limits);
      expect(events.at(-1), label).toEqual({ kind: 'value', value: { execute: 'sync' } });
      expect(events.at(-2)?.kind, label).toBe('error');
    }
  });

  it('keeps its memory bounded over a long hostile stream', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const random = prng(7);
    let count = 0;
    const reader = new JsonStreamReader(() => count++, SMALL_LIMITS);
    const hostile = [binary('['.repeat(4000)), binary('"' + 'a'.repeat(4000)), binary('{"a":'.repeat(1000)), binary('a'.repeat(4000)), binary('[1,'.repeat(2000))];
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let n = 0; n < 2000; n++) {
      reader.push(random() < 0.5 ? pick(random, hostile) : mutate(random, pick(random, hostile)));
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    expect(count).toBeGreaterThan(2000);
    expect(grown).toBeLessThan(4 << 20);
  });
});
