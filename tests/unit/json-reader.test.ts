import { describe, it, expect, afterAll, beforeAll, vi } from 'vitest';
import * as net from 'node:net';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import {
  JsonStreamReader,
  DEFAULT_JSON_READER_LIMITS,
  JSON_NESTING_DEPTH_LIMIT_EXCEEDED,
  JSON_TOKEN_COUNT_LIMIT_EXCEEDED,
  JSON_TOKEN_SIZE_LIMIT_EXCEEDED,
  type JsonReaderEvent,
  type JsonReaderLimits,
} from '../../src/qmp/json-reader';
import { toolAvailable } from '../helpers/tools';
import { startDaemon, type RunningDaemon } from '../helpers/daemons';

type Expected = { value: unknown } | { error: string };

function bytes(input: string | Uint8Array): Uint8Array {
  return typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
}

function read(chunks: Uint8Array[], limits?: Partial<JsonReaderLimits>): JsonReaderEvent[] {
  const events: JsonReaderEvent[] = [];
  const reader = new JsonStreamReader((ev) => events.push(ev), limits);
  for (const chunk of chunks) reader.push(chunk);
  return events;
}

function readWhole(input: string | Uint8Array, limits?: Partial<JsonReaderLimits>): JsonReaderEvent[] {
  return read([bytes(input)], limits);
}

function readBytewise(input: string | Uint8Array, limits?: Partial<JsonReaderLimits>): JsonReaderEvent[] {
  const all = bytes(input);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < all.length; i++) chunks.push(all.subarray(i, i + 1));
  return read(chunks, limits);
}

/** mulberry32: small, seeded, good enough to pick split points. */
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

function splitAtRandom(all: Uint8Array, random: () => number): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  let at = 0;
  while (at < all.length) {
    const size = 1 + Math.floor(random() * Math.min(all.length - at, 1 + Math.floor(random() * 40)));
    chunks.push(all.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

function asExpected(events: JsonReaderEvent[]): Expected[] {
  return events.map((ev) => (ev.kind === 'value' ? { value: ev.value } : { error: ev.message }));
}

const parseError = (detail: string): Expected => ({ error: `JSON parse error, ${detail}` });

/**
 * One line in, events out, as qemu-storage-daemon 7.2 behaves: each value
 * event is what its dispatcher received (non-objects it answers with "QMP
 * input must be a JSON object"), each error is the desc of its error reply.
 */
const REFERENCE_CASES: Array<[string, string, Expected[]]> = [
  ['an unknown keyword', 'garbage\n', [parseError("invalid keyword 'garbage'")]],
  ['a word starting with a capital', 'Garbage\n', [parseError("stray 'G'")]],
  ['two unknown keywords on one line', 'garbage garbage\n', [parseError("invalid keyword 'garbage'"), parseError("invalid keyword 'garbage'")]],
  ['a stray closing brace', '}\n', [parseError('expecting value')]],
  ['a stray closing bracket', ']\n', [parseError('expecting value')]],
  ['three stray closing braces', '}}}\n', [parseError('expecting value'), parseError('expecting value'), parseError('expecting value')]],
  ['an unterminated string', '"abc\n', [parseError(`stray '"abc\n'`)]],
  ['an invalid escape', '"a\\qb"\n', [parseError('invalid escape sequence in string')]],
  ['a control character in a string', '"a\x01b"\n', [parseError(`stray '"a\x01'`)]],
  ['a tab in a string', '"a\tb"\n', [parseError(`stray '"a\t'`)]],
  ['DEL in a string', '"a\x7fb"\n', [{ value: 'a\x7fb' }]],
  ['a truncated UTF-8 sequence', '"\xc3"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['an encoded surrogate', '"\xed\xa0\x80"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['an encoded noncharacter', '"\xef\xbf\xbe"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['a code point above U+10FFFF', '"\xf4\x90\x80\x80"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['an overlong encoding', '"\xe0\x80\xaf"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['a lone continuation byte', '"\x80"\n', [parseError('invalid UTF-8 sequence in string')]],
  ['0xFE inside a string', '"\xfe"\n', [parseError(`stray '"\ufffd'`)]],
  ['the overlong NUL of modified UTF-8', '"\xc0\x80"\n', [{ value: '\u0000' }]],
  ['a four-byte character', '"\xf0\x9f\x98\x80"\n', [{ value: '\u{1F600}' }]],
  ['an escaped NUL', '"\\u0000"\n', [{ value: '\u0000' }]],
  ['an escaped noncharacter', '"\\uFFFE"\n', [parseError('\\uFFFE is not a valid Unicode character')]],
  ['an escaped lone surrogate', '"\\uD800"\n', [parseError('\\uD800 is not a valid Unicode character')]],
  ['an escaped surrogate pair', '"\\uD83D\\uDE00"\n', [{ value: '\u{1F600}' }]],
  ['a \\u escape with bad digits', '"\\u12zz"\n', [parseError('\\u12zz is not a valid Unicode character')]],
  ['a \\u escape cut by the closing quote', '"\\u1"\n', [parseError('\\u1" is not a valid Unicode character')]],
  ['a \\u escape cut inside a character', '"\\u12\xe2\x82\xac"\n', [parseError('\\u12\ufffd is not a valid Unicode character')]],
  ['a leading zero', '01\n', [parseError("stray '01'")]],
  ['a signed leading zero', '-01\n', [parseError("stray '-01'")]],
  ['a number ending in a dot', '1.\n', [parseError("stray '1.\n'")]],
  ['a lone minus', '-\n', [parseError("stray '-\n'")]],
  ['an empty exponent', '1e\n', [parseError("stray '1e\n'")]],
  ['an exponent with only a sign', '1e+\n', [parseError("stray '1e+\n'")]],
  ['zero with an exponent', '0e1\n', [{ value: 0 }, parseError("invalid keyword 'e'"), { value: 1 }]],
  ['zero with a capital exponent', '0E5\n', [{ value: 0 }, parseError("stray 'E'")]],
  ['two dots', '1.5.3\n', [{ value: 1.5 }, parseError("stray '.'")]],
  ['digits then letters', '123abc\n', [{ value: 123 }, parseError("invalid keyword 'abc'")]],
  ['a single-quoted string', "'single'\n", [{ value: 'single' }]],
  ['a single-quoted command', "{'execute':'query-version'}\n", [{ value: { execute: 'query-version' } }]],
  ['a 0xFF byte', '\xff\n', [parseError("stray '\ufffd'")]],
  ['a 0xFF byte before a command', '\xff{"execute":"query-version"}\n', [parseError("stray '\ufffd'"), { value: { execute: 'query-version' } }]],
  ['a 0xFF byte inside a command', '{"execute":"query-version" \xff {"execute":"query-version"}\n', [parseError("stray '\ufffd'"), { value: { execute: 'query-version' } }]],
  ['a NUL byte', '\x00\n', [parseError("stray ''")]],
  ['a percent sign', '%\n', [parseError("stray '%'")]],
  ['a keyword followed by a high byte', 'tru\x80\n', [parseError("invalid keyword 'tru'"), parseError("stray '\ufffd'")]],
  ['a top-level integer', '1\n', [{ value: 1 }]],
  ['a top-level string', '"x"\n', [{ value: 'x' }]],
  ['a top-level array', '[1]\n', [{ value: [1] }]],
  ['three integers on one line', '1 2 3\n', [{ value: 1 }, { value: 2 }, { value: 3 }]],
  ['an empty object', '{}\n', [{ value: {} }]],
  ['text after a value on the same line', '{"execute":"query-version"} garbage\n', [{ value: { execute: 'query-version' } }, parseError("invalid keyword 'garbage'")]],
  ['a duplicate key', '{"a":1,"a":2}\n', [parseError('duplicate key')]],
  ['a trailing comma in an object', '{"a":1,}\n', [parseError('expecting value')]],
  ['a trailing comma in an array', '[1,2,]\n', [parseError('expecting value')]],
  ['a missing comma in an array', '[1 2]\n', [parseError('expected separator in list')]],
  ['a missing comma in an object', '{"execute":"query-version" garbage}\n', [parseError('expected separator in dict')]],
  ['a key without value', '{"a"}\n', [parseError('missing : in object pair')]],
  ['a key that is not a string', '{1:2}\n', [parseError('key is not a string in object')]],
  ['mismatched brackets', '{"a":[}]\n', [parseError('expecting value')]],
  ['an object closed by a bracket', '{]\n', [parseError('expecting value')]],
  ['an array closed by a brace', '[}\n', [parseError('expecting value')]],
  ['a capital keyword inside a command', '{"execute":"query-version", "id": TRUE}\n', [parseError("stray 'T'"), parseError('expecting value')]],
  [
    'a control character in a string inside a command',
    '{"a": "x\x01", "execute":"query-version"}\n',
    [parseError(`stray '"x\x01'`), parseError('expecting value'), { value: 'execute' }, parseError('expecting value'), { value: 'query-version' }, parseError('expecting value')],
  ],
  [
    'a form feed between members',
    '{"execute":"query-version",\x0c"id":1}\n',
    [parseError("stray '\f'"), parseError('expecting value'), { value: 1 }, parseError('expecting value')],
  ],
  ['an unterminated string followed by a command', '"abc\nxyz {"execute":"query-version"}\n', [parseError(`stray '"abc\n'`), { value: { execute: 'query-version' } }]],
  ['recovery stopping at a brace', 'Gabc}{"execute":"query-version"}\n', [parseError("stray 'G'"), parseError('expecting value'), { value: { execute: 'query-version' } }]],
  ['recovery stopping at a colon', 'G:1\n', [parseError("stray 'G'"), parseError('expecting value'), { value: 1 }]],
  ['recovery stopping at a comma', 'G,1\n', [parseError("stray 'G'"), parseError('expecting value'), { value: 1 }]],
  ['recovery skipping a space', 'G 1\n', [parseError("stray 'G'")]],
  ['recovery skipping quotes', 'G"a"\n', [parseError("stray 'G'")]],
  ['recovery skipping a tab', 'Ga\t1\n', [parseError("stray 'G'")]],
  ['recovery stopping at a carriage return', 'G\r1\n', [parseError("stray 'G'"), { value: 1 }]],
  ['recovery stopping at 0xFF', 'G\xff1\n', [parseError("stray 'G'"), parseError("stray '\ufffd'")]],
  ['recovery stopping at a control character', 'G\x011\n', [parseError("stray 'G'"), parseError("stray '\x01'")]],
  ['a two-byte character outside a string', '\xc3\xa9\n', [parseError("stray '\ufffd'")]],
  ['an escaped single quote', '"\\\'"\n', [{ value: "'" }]],
  ['a double quote inside a single-quoted string', '\'a"b\'\n', [{ value: 'a"b' }]],
  ['an escaped slash', '"\\/"\n', [{ value: '/' }]],
  ['CR LF and tabs as whitespace', '\t{"execute"\t:\t"query-version"}\r\n', [{ value: { execute: 'query-version' } }]],
  ['two objects back to back', '{"a":1}{"b":2}\n', [{ value: { a: 1 } }, { value: { b: 2 } }]],
  ['a keyword made of two', 'truefalse\n', [parseError("invalid keyword 'truefalse'")]],
  ['nested values', '{"a":{"b":[1,{"c":null}]}, "x":true}\n', [{ value: { a: { b: [1, { c: null }] }, x: true } }]],
];

describe('JsonStreamReader', () => {
  describe('framing', () => {
    const command = '{"execute":"query-version","id":7}';

    it('delivers a command that arrives in one chunk', () => {
      expect(asExpected(readWhole(command + '\n'))).toEqual([{ value: { execute: 'query-version', id: 7 } }]);
    });

    it('delivers a command fed one byte at a time', () => {
      expect(asExpected(readBytewise(command + '\n'))).toEqual([{ value: { execute: 'query-version', id: 7 } }]);
    });

    it('delivers an object as soon as its closing brace arrives, without waiting for a newline', () => {
      expect(asExpected(readWhole(command))).toEqual([{ value: { execute: 'query-version', id: 7 } }]);
    });

    it('waits for the byte after a number before delivering it', () => {
      const events: JsonReaderEvent[] = [];
      const reader = new JsonStreamReader((ev) => events.push(ev));
      reader.push(bytes('12'));
      expect(events).toEqual([]);
      reader.push(bytes('3 '));
      expect(asExpected(events)).toEqual([{ value: 123 }]);
    });

    it('delivers several messages that arrive in one chunk, in order', () => {
      const input = `${command}\n{"execute":"a"}  {"execute":"b","arguments":{"x":[1,2]}}\r\n\n`;
      expect(asExpected(readWhole(input))).toEqual([
        { value: { execute: 'query-version', id: 7 } },
        { value: { execute: 'a' } },
        { value: { execute: 'b', arguments: { x: [1, 2] } } },
      ]);
    });

    it('delivers a message that spans many chunks with others around it', () => {
      const chunks = ['{"execute":"a"}{"exe', 'cute":"b","argum', 'ents":{"s":"lo', 'ng"}}{"execute":"c"}'].map((s) => bytes(s));
      expect(asExpected(read(chunks))).toEqual([
        { value: { execute: 'a' } },
        { value: { execute: 'b', arguments: { s: 'long' } } },
        { value: { execute: 'c' } },
      ]);
    });

    it('decodes a UTF-8 character split between two chunks', () => {
      const all = Buffer.from('{"id":"\u00e9\u20ac\u{1F600}"}', 'utf8');
      for (let cut = 1; cut < all.length; cut++) {
        expect(asExpected(read([all.subarray(0, cut), all.subarray(cut)]))).toEqual([{ value: { id: '\u00e9\u20ac\u{1F600}' } }]);
      }
    });

    it('hands a simple command in one chunk to JSON.parse, and reads a split one itself, with the same result', () => {
      const spy = vi.spyOn(JSON, 'parse');
      try {
        const whole = readWhole(command);
        expect(spy).toHaveBeenCalledTimes(1);
        spy.mockClear();
        expect(readBytewise(command)).toEqual(whole);
        expect(spy).not.toHaveBeenCalled();
      } finally {
        spy.mockRestore();
      }
    });

    it('ignores whitespace between messages and delivers nothing for whitespace alone', () => {
      expect(readWhole(' \t\r\n \n')).toEqual([]);
    });

    it('drops a partial message silently when the connection ends, and starts afresh', () => {
      const events: JsonReaderEvent[] = [];
      const reader = new JsonStreamReader((ev) => events.push(ev));
      reader.push(bytes('{"execute":"query-'));
      reader.end();
      expect(events).toEqual([]);
      reader.push(bytes('garbage\n{"execute":"x"}'));
      expect(asExpected(events)).toEqual([parseError("invalid keyword 'garbage'"), { value: { execute: 'x' } }]);
    });

    it('drops a pending number or keyword silently when the connection ends', () => {
      const events: JsonReaderEvent[] = [];
      const reader = new JsonStreamReader((ev) => events.push(ev));
      reader.push(bytes('12'));
      reader.end();
      reader.push(bytes('garb'));
      reader.end();
      expect(events).toEqual([]);
    });
  });

  describe('behaves as qemu-storage-daemon 7.2 on', () => {
    for (const [name, input, expected] of REFERENCE_CASES) {
      it(`${name} (${JSON.stringify(input)})`, () => {
        expect(asExpected(readWhole(input))).toEqual(expected);
        expect(asExpected(readBytewise(input))).toEqual(expected);
      });
    }
  });

  describe('the fast path gives way to the state machine on', () => {
    const cases: Array<[string, string, Expected[]]> = [
      ['an escaped noncharacter', '{"a":"\\uFFFE"}', [parseError('\\uFFFE is not a valid Unicode character')]],
      ['an escaped lone surrogate', '{"a":"\\uD800x"}', [parseError('\\uD800 is not a valid Unicode character')]],
      ['an escaped NUL', '{"a":"\\u0000"}', [{ value: { a: '\u0000' } }]],
      ['a raw noncharacter', '{"a":"\xef\xbf\xbe"}', [parseError('invalid UTF-8 sequence in string')]],
      ['the overlong NUL', '{"a":"\xc0\x80"}', [{ value: { a: '\u0000' } }]],
      ['a raw two-byte character', '{"a":"\xc3\xa9"}', [{ value: { a: '\u00e9' } }]],
      ['DEL', '{"a":"\x7f"}', [{ value: { a: '\x7f' } }]],
      ['zero with an exponent', '{"a":0e1}', [parseError('expected separator in dict')]],
      ['a leading zero', '{"a":01}', [parseError("stray '01'"), parseError('expecting value')]],
      ['a huge exponent', '{"a":1E400}', [{ value: { a: Infinity } }]],
      ['an integer beyond 2^53', '{"a":9007199254740993}', [{ value: { a: 9007199254740993n } }]],
      ['a float with a zero fraction', '{"a":1.0}', [{ value: { a: 1 } }]],
      ['a single-quoted value', `{"a":'x'}`, [{ value: { a: 'x' } }]],
      ['an escaped single quote', `{"a":"\\'"}`, [{ value: { a: "'" } }]],
      ['a duplicate key', '{"a":1,"b":{},"a":1}', [parseError('duplicate key')]],
      ['an invalid keyword', '{"a":tru}', [parseError("invalid keyword 'tru'")]],
      ['a trailing comma', '{"a":1,}', [parseError('expecting value')]],
      ['deep nesting', '{"a":' + '['.repeat(80) + ']'.repeat(80) + '}', [{ value: { a: JSON.parse('['.repeat(80) + ']'.repeat(80)) as unknown } }]],
    ];
    for (const [name, input, expected] of cases) {
      it(`${name} (${JSON.stringify(input).slice(0, 60)})`, () => {
        expect(asExpected(readWhole(input))).toEqual(expected);
        expect(asExpected(readBytewise(input))).toEqual(expected);
      });
    }

    it('a -0 member, which JSON.parse would read as -0', () => {
      const [ev] = readWhole('{"a":-0}');
      expect(Object.is((ev as { value: { a: number } }).value.a, 0)).toBe(true);
    });
  });

  describe('error recovery', () => {
    it('keeps serving the same stream after malformed input: the next valid message is delivered', () => {
      const input = 'garbage\n{"execute":"a"}\n{"a":1,"a":2}\n{"execute":"b"}\n"open\n{"execute":"c"}\n\xff{"execute":"d"}\n';
      const expected = [
        parseError("invalid keyword 'garbage'"),
        { value: { execute: 'a' } },
        parseError('duplicate key'),
        { value: { execute: 'b' } },
        parseError(`stray '"open\n'`),
        { value: { execute: 'c' } },
        parseError("stray '\ufffd'"),
        { value: { execute: 'd' } },
      ];
      expect(asExpected(readWhole(input))).toEqual(expected);
      expect(asExpected(readBytewise(input))).toEqual(expected);
    });

    it('reports one error for a malformed message and drops all of it', () => {
      expect(asExpected(readWhole('{"execute":"a","arguments":{"x":[1,2,nope]}}\n'))).toEqual([parseError("invalid keyword 'nope'")]);
    });

    it('reports the first error of a message, in token order', () => {
      expect(asExpected(readWhole('{"a":"\\q","b":nope}\n'))).toEqual([parseError('invalid escape sequence in string')]);
      expect(asExpected(readWhole('{"a":nope,"b":"\\q"}\n'))).toEqual([parseError("invalid keyword 'nope'")]);
      expect(asExpected(readWhole('{"a":"\\q"\n'))).toEqual([]);
    });

    it('cuts the text of a parse error at 1023 bytes, as the reference does', () => {
      const [ev] = readWhole('a'.repeat(2000) + '\n');
      expect(ev).toEqual({ kind: 'error', message: `JSON parse error, invalid keyword '${'a'.repeat(1023 - 17)}` });
    });

    it('does not cut the text of a lexical error, but stops it at a NUL byte', () => {
      const long = '"' + 'a'.repeat(2000);
      expect(asExpected(readWhole(long + '\x01\n'))).toEqual([parseError(`stray '${long}\x01'`)]);
      expect(asExpected(readWhole('"ab\x00cd\n'))).toEqual([parseError(`stray '"ab'`)]);
    });

    it('shows undecodable bytes of a stray token as U+FFFD and keeps valid characters', () => {
      expect(asExpected(readWhole('"\xc3\xa9\xc3\x01\n'))).toEqual([parseError(`stray '"\u00e9\ufffd\x01'`)]);
    });
  });

  describe('values', () => {
    const valueOf = (text: string): unknown => {
      const whole = readWhole(text + '\n');
      expect(readBytewise(text + '\n')).toEqual(whole);
      expect(whole).toHaveLength(1);
      expect(whole[0]!.kind).toBe('value');
      return (whole[0] as { value: unknown }).value;
    };

    it('returns safe integers as numbers', () => {
      expect(valueOf('9007199254740991')).toBe(9007199254740991);
      expect(valueOf('-9007199254740991')).toBe(-9007199254740991);
      expect(valueOf('{"id":123456789012345}')).toEqual({ id: 123456789012345 });
    });

    it('returns integers beyond 2^53 that fit 64 bits as exact BigInts', () => {
      expect(valueOf('9007199254740993')).toBe(9007199254740993n);
      expect(valueOf('18446744073709551615')).toBe(18446744073709551615n);
      expect(valueOf('-9223372036854775808')).toBe(-9223372036854775808n);
      expect(valueOf('{"size":9223372036854775807}')).toEqual({ size: 9223372036854775807n });
    });

    it('returns a long integer as a number when it is safe, and a BigInt when not', () => {
      expect(valueOf('1000000000000001')).toBe(1000000000000001);
      expect(valueOf('-1000000000000001')).toBe(-1000000000000001);
      expect(valueOf('1000000000000000001')).toBe(1000000000000000001n);
    });

    it('reads integers beyond 64 bits as doubles, as the reference does', () => {
      expect(valueOf('18446744073709551616')).toBe(18446744073709551616);
      expect(valueOf('-9223372036854775809')).toBe(-9223372036854775808);
    });

    it('reads -0 as the integer 0 and -0.0 as the float -0', () => {
      expect(Object.is(valueOf('-0'), 0)).toBe(true);
      expect(Object.is((valueOf('{"a":-0}') as { a: number }).a, 0)).toBe(true);
      expect(Object.is(valueOf('-0.0'), -0)).toBe(true);
    });

    it('returns floats as numbers, so 1.0 arrives as 1', () => {
      expect(valueOf('1.0')).toBe(1);
      expect(valueOf('1.5e3')).toBe(1500);
      expect(valueOf('1E+2')).toBe(100);
      expect(valueOf('1.5E-2')).toBe(0.015);
      expect(valueOf('1e400')).toBe(Infinity);
    });

    it('reads the keywords true, false and null', () => {
      expect(valueOf('[true,false,null]')).toEqual([true, false, null]);
    });

    it('reads every escape the reference knows', () => {
      expect(valueOf(String.raw`"\"\'\\\/\b\f\n\r\t\u0041\u00e9"`)).toBe('"\'\\/\b\f\n\r\tA\u00e9');
      expect(valueOf(String.raw`'\"\''`)).toBe('"\'');
    });

    it('keeps a "__proto__" key as an own member without touching the prototype', () => {
      for (const text of ['{"__proto__":{"polluted":1}}', '{"__proto__":{"polluted":1}} ', "{'__proto__':{'polluted':1}}"]) {
        const v = valueOf(text) as Record<string, unknown>;
        expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
        expect(Object.keys(v)).toEqual(['__proto__']);
        expect((v as { polluted?: unknown }).polluted).toBeUndefined();
      }
    });

    it('refuses a duplicate "__proto__" key like any other', () => {
      expect(asExpected(readWhole('{"__proto__":1,"__proto__":2}'))).toEqual([parseError('duplicate key')]);
    });

    it('refuses a duplicate key deep inside an otherwise simple command', () => {
      expect(asExpected(readWhole('{"execute":"x","arguments":{"a":{"b":1,"b":1}}}'))).toEqual([parseError('duplicate key')]);
    });

    it('returns the same values whether a message comes whole or byte by byte', () => {
      const text = '{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"n\\u00e9","file":{"driver":"file","filename":"/a b/c"},"cache":{"direct":true,"no-flush":false},"discard":null,"size":17179869184,"big":18446744073709551615,"f":0.5,"l":[1,-2,[],{}]},"id":{"n":[1]}}';
      expect(readBytewise(text)).toEqual(readWhole(text));
      expect(readWhole(text)[0]).toEqual({
        kind: 'value',
        value: {
          execute: 'blockdev-add',
          arguments: {
            driver: 'qcow2',
            'node-name': 'n\u00e9',
            file: { driver: 'file', filename: '/a b/c' },
            cache: { direct: true, 'no-flush': false },
            discard: null,
            size: 17179869184,
            big: 18446744073709551615n,
            f: 0.5,
            l: [1, -2, [], {}],
          },
          id: { n: [1] },
        },
      });
    });
  });

  describe('limits', () => {
    it('uses the reference limits by default', () => {
      expect(DEFAULT_JSON_READER_LIMITS).toEqual({ maxMessageBytes: 64 * 1024 * 1024, maxTokens: 2 * 1024 * 1024, maxDepth: 1024 });
    });

    it('accepts 1024 levels of nesting and refuses 1025', () => {
      expect(readWhole('['.repeat(1024) + ']'.repeat(1024))).toHaveLength(1);
      expect(readWhole('['.repeat(1024) + ']'.repeat(1024))[0]!.kind).toBe('value');
      expect(asExpected(readWhole('['.repeat(1025) + '\n'))).toEqual([{ error: JSON_NESTING_DEPTH_LIMIT_EXCEEDED }]);
    });

    it('starts counting afresh after a nesting error, so each extra closer is an error', () => {
      const events = readWhole('['.repeat(1025) + ']'.repeat(1025) + '\n');
      expect(events).toHaveLength(1026);
      expect(events[0]).toEqual({ kind: 'error', message: JSON_NESTING_DEPTH_LIMIT_EXCEEDED });
      expect(new Set(events.slice(1).map((e) => (e.kind === 'error' ? e.message : 'value')))).toEqual(new Set(['JSON parse error, expecting value']));
    });

    it('counts braces and brackets together against maxDepth', () => {
      const limits = { maxDepth: 4 };
      expect(asExpected(readWhole('{"a":[{"b":[1]}]}', limits))).toEqual([{ value: { a: [{ b: [1] }] } }]);
      expect(asExpected(readWhole('{"a":[{"b":[[1]]}]}', limits))[0]).toEqual({ error: JSON_NESTING_DEPTH_LIMIT_EXCEEDED });
    });

    it('refuses a message of more than maxTokens tokens', () => {
      const limits = { maxTokens: 7 };
      expect(asExpected(readWhole('[1,2,3]', limits))).toEqual([{ value: [1, 2, 3] }]);
      expect(asExpected(readWhole('[1,2,3,4]', limits))).toEqual([{ error: JSON_TOKEN_COUNT_LIMIT_EXCEEDED }, parseError('expecting value')]);
    });

    it('accepts 2^21 tokens in a message and refuses one more, like the reference', () => {
      const pairs = (n: number): string => '[' + '1,'.repeat(n) + '1]\n';
      expect(readWhole(pairs(2 ** 20 - 1))).toEqual([{ kind: 'error', message: JSON_TOKEN_COUNT_LIMIT_EXCEEDED }]);
      const fits = readWhole(pairs(2 ** 20 - 2));
      expect(fits).toHaveLength(1);
      expect((fits[0] as { value: unknown[] }).value).toHaveLength(2 ** 20 - 1);
    });

    it('refuses a message whose tokens add up to maxMessageBytes, whitespace not counted', () => {
      const limits = { maxMessageBytes: 16 };
      // Tokens: { "abcdef" : 1 } = 1 + 8 + 1 + 1 + 1 = 12 bytes; the reference needs size + 1 <= limit.
      expect(asExpected(readWhole('{    "abcdef"     :      1       }', limits))).toEqual([{ value: { abcdef: 1 } }]);
      expect(asExpected(readWhole('{"abcdefghi":1}', limits))).toEqual([{ value: { abcdefghi: 1 } }]);
      expect(asExpected(readWhole('{"abcdefghij":1}', limits))).toEqual([{ error: JSON_TOKEN_SIZE_LIMIT_EXCEEDED }]);
    });

    it('cuts an endless string at the limit, reports it, and lexes what follows afresh', () => {
      const limits = { maxMessageBytes: 10 };
      // The token '"aaaaaaaaaa' (11 bytes) is too long; "bb cc" then reads as keywords.
      expect(asExpected(readWhole('"aaaaaaaaaabb cc\n', limits))).toEqual([
        { error: JSON_TOKEN_SIZE_LIMIT_EXCEEDED },
        parseError("invalid keyword 'bb'"),
        parseError("invalid keyword 'cc'"),
      ]);
      expect(asExpected(readBytewise('"aaaaaaaaaabb cc\n', limits))).toEqual(asExpected(readWhole('"aaaaaaaaaabb cc\n', limits)));
    });

    it('keeps memory bounded while an endless string streams in', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as () => void;
      const limits = { maxMessageBytes: 256 * 1024 };
      const events: JsonReaderEvent[] = [];
      const reader = new JsonStreamReader((ev) => events.push(ev), limits);
      const chunk = Buffer.alloc(64 * 1024 + 1, 'a');
      reader.push(bytes('"'));
      // Warm up first, so one-off allocations (of this test or earlier ones) are not counted:
      // what matters is that memory does not grow with the input.
      // V8 frees ArrayBuffer memory on a background sweeper after a GC: give it time before reading the figures.
      const settle = async () => {
        for (let i = 0; i < 3; i++) {
          gc();
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      for (let i = 0; i < 64; i++) reader.push(chunk); // 4 MiB
      await settle();
      const before = process.memoryUsage();
      for (let i = 0; i < 512; i++) reader.push(chunk); // 32 MiB more
      await settle();
      const after = process.memoryUsage();
      expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(8 << 20);
      expect(after.heapUsed - before.heapUsed).toBeLessThan(16 << 20);
      // One size error per 256 KiB of string; after the first, the 'a's are an endless keyword.
      expect(events.length).toBeGreaterThanOrEqual(140);
      expect(new Set(events.map((e) => (e.kind === 'error' ? e.message : 'value')))).toEqual(new Set([JSON_TOKEN_SIZE_LIMIT_EXCEEDED]));
    });

    it('reports an endless run of opening brackets once per maxDepth + 1 brackets', () => {
      const events: JsonReaderEvent[] = [];
      const reader = new JsonStreamReader((ev) => events.push(ev));
      const chunk = Buffer.alloc(65536, '[');
      for (let i = 0; i < 64; i++) reader.push(chunk);
      expect(events).toHaveLength(Math.floor((64 * 65536) / 1025));
      expect(events.every((e) => e.kind === 'error' && e.message === JSON_NESTING_DEPTH_LIMIT_EXCEEDED)).toBe(true);
    });

    const MiB = 1024 * 1024;
    const aaaa = Buffer.alloc(64 * 1024, 'a');
    const repeated = (chunk: Buffer, bytes: number): Buffer[] => Array.from({ length: bytes / chunk.length }, () => chunk);

    it('cuts a string of more than 64 MiB with the default limit, like the reference', () => {
      const chunks = [bytes('"'), ...repeated(aaaa, 64 * MiB), Buffer.alloc(100, 'a'), bytes('" \n')];
      expect(asExpected(read(chunks))).toEqual([
        { error: JSON_TOKEN_SIZE_LIMIT_EXCEEDED },
        parseError(`invalid keyword '${'a'.repeat(100)}'`),
        parseError(`stray '" \n'`),
      ]);
    });

    it('refuses two strings that add up to more than 64 MiB in one message, like the reference', () => {
      const chunks = [bytes('["'), ...repeated(aaaa, 32 * MiB), bytes('","'), ...repeated(aaaa, 32 * MiB), bytes('"]\n')];
      expect(asExpected(read(chunks))).toEqual([{ error: JSON_TOKEN_SIZE_LIMIT_EXCEEDED }, parseError('expecting value')]);
    });
  });

  describe('split points', () => {
    const corpus = [
      ...REFERENCE_CASES.map(([, input]) => input),
      '{"execute":"query-version","id":7}\n{"execute":"x","arguments":{"a":[1,2,{"b":"c\\u00e9"}],"n":-12.5e-3}}',
      'garbage {"execute":"a"} ] ["x", 18446744073709551615, \'q\\\'\'] "\xc3\xa9" \xff {"a":1,"a":2} 01 1. -',
      '{"execute":"x","arguments":{"s":"' + 'long '.repeat(50) + '"}}',
    ];
    const limitsList: Array<Partial<JsonReaderLimits> | undefined> = [undefined, { maxMessageBytes: 24, maxTokens: 9, maxDepth: 3 }];

    it('gives the same events for the same bytes whatever the split points (seeded, 2000 splits)', () => {
      const random = prng(0x5eed);
      for (const limits of limitsList) {
        for (const input of corpus) {
          const all = bytes(input);
          const whole = readWhole(all, limits);
          expect(readBytewise(all, limits)).toEqual(whole);
          for (let k = 0; k < 10; k++) {
            expect(read(splitAtRandom(all, random), limits)).toEqual(whole);
          }
        }
      }
    });

    it('gives the same events for a long pipelined stream cut at random points', () => {
      const random = prng(42);
      const parts: string[] = [];
      for (let i = 0; i < 300; i++) {
        parts.push(random() < 0.1 ? REFERENCE_CASES[i % REFERENCE_CASES.length]![1] : `{"execute":"query-block","id":${i}}\n`);
      }
      const all = bytes(parts.join(''));
      const whole = readWhole(all);
      for (let k = 0; k < 20; k++) expect(read(splitAtRandom(all, random))).toEqual(whole);
    });
  });
});

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('JsonStreamReader against qemu-storage-daemon', () => {
  let daemon: RunningDaemon;
  let socket: net.Socket;
  const lines: string[] = [];
  let partial = '';
  let wake: (() => void) | undefined;

  const nextLine = async (): Promise<string> => {
    const deadline = Date.now() + 10_000;
    while (lines.length === 0) {
      if (Date.now() > deadline) throw new Error('no reply from qemu-storage-daemon');
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    return lines.shift()!;
  };

  beforeAll(async () => {
    daemon = await startDaemon('qsd');
    socket = net.createConnection(daemon.qmpPath);
    socket.on('data', (d: Buffer) => {
      const parts = (partial + d.toString('utf8')).split('\n');
      partial = parts.pop()!;
      for (const part of parts) if (part.trim()) lines.push(part.trim());
      wake?.();
    });
    await nextLine(); // greeting
    socket.write('{"execute":"qmp_capabilities"}\n');
    expect(await nextLine()).toContain('"return"');
  });

  afterAll(async () => {
    socket?.destroy();
    await daemon?.stop();
  });

  // What a client sees, from the reference's reply or from our event.
  const seenFromReply = (line: string): string => {
    const reply = JSON.parse(line) as { error?: { desc: string }; id?: unknown };
    return reply.error ? `error: ${reply.error.desc}` : `return ${JSON.stringify(reply.id)}`;
  };
  const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const seenFromEvent = (ev: JsonReaderEvent): string => {
    if (ev.kind === 'error') return `error: ${ev.message}`;
    if (!isPlainObject(ev.value)) return 'error: QMP input must be a JSON object';
    return `return ${JSON.stringify(ev.value.id)}`;
  };
  // Objects other than query-version get answers from the dispatcher, not the reader.
  const onlyQueryVersion = (input: string): boolean =>
    readWhole(input).every((ev) => ev.kind === 'error' || !isPlainObject(ev.value) || ev.value.execute === 'query-version');

  const probes: string[] = [
    ...REFERENCE_CASES.map(([, input]) => input),
    '[' + '['.repeat(1100) + ']'.repeat(1100) + ']\n',
    'a'.repeat(1500) + '\n',
    '{"execute":"query-version","id":"\\u00e9\\ud83d\\ude00\\/"}\n',
    '{"execute":"query-version","id":12345}{"execute":"query-version","id":[1,{"k":null}]}\n',
    "{'execute':'query-version','id':'it\\'s'}\n",
  ].filter(onlyQueryVersion);

  it('sends the same replies, as many of them, for each malformed or odd input', async () => {
    expect(probes.length).toBeGreaterThan(60);
    for (const [n, probe] of probes.entries()) {
      const syncId = `sync-${n}`;
      const input = Buffer.concat([bytes(probe), bytes(`{"execute":"query-version","id":"${syncId}"}\n`)]);
      const ours = readWhole(input).map(seenFromEvent);
      socket.write(input);
      const theirs: string[] = [];
      for (;;) {
        const seen = seenFromReply(await nextLine());
        theirs.push(seen);
        if (seen === `return "${syncId}"`) break;
      }
      expect({ probe, replies: ours }).toEqual({ probe, replies: theirs });
    }
  });
});
