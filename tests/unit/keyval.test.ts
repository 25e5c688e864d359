import { describe, it, expect } from 'vitest';
import {
  KeyvalError,
  isJsonArgument,
  parseJsonArgument,
  parseKeyval,
  parseKeyvalWithHelp,
  parseQemuOpts,
  qemuOptsHelp,
  type QemuOptsList,
} from '../../src/cli/keyval';

function keyvalErrorOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyvalError);
    return (error as KeyvalError).message;
  }
  throw new Error('expected a KeyvalError');
}

describe('parseKeyval', () => {
  it('reads flat key=value pairs as strings', () => {
    expect(parseKeyval('driver=file,filename=disk.img,read-only=on')).toEqual({
      driver: 'file',
      filename: 'disk.img',
      'read-only': 'on',
    });
  });

  it('returns an empty tree for empty text', () => {
    expect(parseKeyval('')).toEqual({});
  });

  it('accepts a trailing comma', () => {
    expect(parseKeyval('a=1,')).toEqual({ a: '1' });
  });

  it('reads a doubled comma as a literal comma inside a value', () => {
    expect(parseKeyval('filename=a,,b.img,x=y')).toEqual({ filename: 'a,b.img', x: 'y' });
    expect(parseKeyval('a=1,,')).toEqual({ a: '1,' });
    expect(parseKeyval('a=,,,,,b=2')).toEqual({ a: ',,', b: '2' });
  });

  it('keeps "=" inside a value', () => {
    expect(parseKeyval('a=b=c')).toEqual({ a: 'b=c' });
  });

  it('accepts an empty value', () => {
    expect(parseKeyval('a=,b=')).toEqual({ a: '', b: '' });
  });

  it('builds nested objects from dotted keys', () => {
    expect(parseKeyval('driver=qcow2,file.driver=file,file.filename=x.qcow2,cache.direct=on')).toEqual({
      driver: 'qcow2',
      file: { driver: 'file', filename: 'x.qcow2' },
      cache: { direct: 'on' },
    });
    expect(parseKeyval('a.b.c.d=deep')).toEqual({ a: { b: { c: { d: 'deep' } } } });
  });

  it('builds lists from keys made of digits', () => {
    expect(parseKeyval('a.0=x,a.1=y')).toEqual({ a: ['x', 'y'] });
    expect(parseKeyval('a.1=y,a.0=x')).toEqual({ a: ['x', 'y'] });
  });

  it('builds lists of objects and lists of lists', () => {
    expect(parseKeyval('s.0.host=a,s.0.port=1,s.1.host=b')).toEqual({
      s: [{ host: 'a', port: '1' }, { host: 'b' }],
    });
    expect(parseKeyval('m.0.0=a,m.0.1=b,m.1.0=c')).toEqual({ m: [['a', 'b'], ['c']] });
  });

  it('reads an index with leading zeros as the same number', () => {
    expect(parseKeyval('a.00=x')).toEqual({ a: ['x'] });
  });

  it('lets the last of a repeated key win', () => {
    expect(parseKeyval('driver=file,driver=raw')).toEqual({ driver: 'raw' });
    expect(parseKeyval('a.b=1,a.c=2,a.b=3')).toEqual({ a: { b: '3', c: '2' } });
  });

  it('uses the implied key for a first element without "="', () => {
    expect(parseKeyval('iothread,id=io0', 'qom-type')).toEqual({ 'qom-type': 'iothread', id: 'io0' });
    expect(parseKeyval('m0', 'chardev')).toEqual({ chardev: 'm0' });
    expect(parseKeyval('nbd,id=e,node-name=n', 'type')).toEqual({ type: 'nbd', id: 'e', 'node-name': 'n' });
  });

  it('uses the implied key only for the first element', () => {
    expect(keyvalErrorOf(() => parseKeyval('id=x,iothread', 'qom-type'))).toBe("Expected '=' after parameter 'iothread'");
  });

  it('ends an implied value at the first comma, without ",," escapes', () => {
    expect(keyvalErrorOf(() => parseKeyval('null-co,,x', 'driver'))).toBe("Invalid parameter ''");
  });

  it('lets an explicit key override the implied one, last one winning', () => {
    expect(parseKeyval('file,driver=raw', 'driver')).toEqual({ driver: 'raw' });
  });

  it('takes the implied value as it is, characters included', () => {
    expect(parseKeyval('1 weird/value', 'driver')).toEqual({ driver: '1 weird/value' });
  });

  it('accepts downstream names with a __RFQDN_ prefix', () => {
    expect(parseKeyval('__com.redhat_x=1')).toEqual({ '__com.redhat_x': '1' });
  });

  it('accepts keys of up to 127 characters', () => {
    const key = 'k'.repeat(127);
    expect(parseKeyval(`${key}=1`)).toEqual({ [key]: '1' });
  });

  it('accepts key names such as "constructor" as plain members', () => {
    expect(parseKeyval('constructor=1,toString.x=2')).toEqual({ constructor: '1', toString: { x: '2' } });
  });

  describe('errors, worded like the reference', () => {
    const cases: Array<[string, string, string | undefined]> = [
      ['driver=x,foo', "Expected '=' after parameter 'foo'", undefined],
      ['a.b', "Expected '=' after parameter 'a.b'", undefined],
      [',driver=x', "Invalid parameter ''", undefined],
      ['=x', "Invalid parameter ''", undefined],
      ['a..b=1', "Invalid parameter 'a..b'", undefined],
      ['a.=1', "Invalid parameter 'a.'", undefined],
      ['.a=1', "Invalid parameter '.a'", undefined],
      ['a.0x=1', "Invalid parameter 'a.0x'", undefined],
      ['0=1', "Invalid parameter '0'", undefined],
      ['a b=1', "Invalid parameter 'a b'", undefined],
      ['_x=1', "Invalid parameter '_x'", undefined],
      ['a.-1=1', "Invalid parameter 'a.-1'", undefined],
      ['a=1,a.b=2', "Parameters 'a.*' used inconsistently", undefined],
      ['a.b=1,a=2', "Parameters 'a.*' used inconsistently", undefined],
      ['a.b.c=1,a.b=2', "Parameters 'a.b.*' used inconsistently", undefined],
      ['a.0.x=1,a.0=2', "Parameters 'a.0.*' used inconsistently", undefined],
      ['a.0=x,a.b=y', "Parameters 'a.*' used inconsistently", undefined],
      ['x.y.0=1,x.y.z=2', "Parameters 'x.y.*' used inconsistently", undefined],
      ['a.0=x,a.2=y', "Parameter 'a.1' missing", undefined],
      ['a.1=x', "Parameter 'a.0' missing", undefined],
      ['a.01=1', "Parameter 'a.0' missing", undefined],
      ['a.b.1=x', "Parameter 'a.b.0' missing", undefined],
      ['a.99999999999999999999=1', "Parameter 'a.0' missing", undefined],
      ['null-co,driver.x=1', "Parameters 'driver.*' used inconsistently", 'driver'],
      ['help', 'Help is not available for this option', undefined],
      ['driver=x,?', 'Help is not available for this option', undefined],
      ['help', 'Help is not available for this option', 'driver'],
    ];
    for (const [text, message, implied] of cases) {
      it(`refuses ${JSON.stringify(text)}${implied ? ` (implied ${implied})` : ''}`, () => {
        expect(keyvalErrorOf(() => parseKeyval(text, implied))).toBe(message);
      });
    }

    it('refuses a key of 128 characters or more as too long', () => {
      const key = 'k'.repeat(128);
      expect(keyvalErrorOf(() => parseKeyval(`${key}=1`))).toBe(`Parameter '${key}' is too long`);
      expect(keyvalErrorOf(() => parseKeyval(`a.${key}=1`))).toBe(`Parameter fragment '${key}' is too long`);
      expect(keyvalErrorOf(() => parseKeyval(`${key}.a=1`))).toBe(`Parameter fragment '${key}' is too long`);
    });

    it('reports a syntax error before refusing help', () => {
      expect(keyvalErrorOf(() => parseKeyval('help,foo'))).toBe("Expected '=' after parameter 'foo'");
    });
  });
});

describe('parseKeyvalWithHelp', () => {
  it('reports a help element and leaves it out of the tree', () => {
    expect(parseKeyvalWithHelp('help', 'qom-type')).toEqual({ tree: {}, help: true });
    expect(parseKeyvalWithHelp('iothread,help', 'qom-type')).toEqual({ tree: { 'qom-type': 'iothread' }, help: true });
    expect(parseKeyvalWithHelp('iothread,id=x,?', 'qom-type')).toEqual({
      tree: { 'qom-type': 'iothread', id: 'x' },
      help: true,
    });
  });

  it('reads "help=…" as an ordinary key', () => {
    expect(parseKeyvalWithHelp('help=1')).toEqual({ tree: { help: '1' }, help: false });
  });

  it('still reports syntax errors after a help element', () => {
    expect(keyvalErrorOf(() => parseKeyvalWithHelp('help,iothread', 'qom-type'))).toBe(
      "Expected '=' after parameter 'iothread'",
    );
  });
});

describe('isJsonArgument', () => {
  it('is true only when the text starts with "{"', () => {
    expect(isJsonArgument('{"driver":"file"}')).toBe(true);
    expect(isJsonArgument('{')).toBe(true);
    expect(isJsonArgument(' {"driver":"file"}')).toBe(false);
    expect(isJsonArgument('[1]')).toBe(false);
    expect(isJsonArgument('driver=file')).toBe(false);
    expect(isJsonArgument('')).toBe(false);
  });
});

describe('parseJsonArgument', () => {
  it('parses objects with nested values of every type', () => {
    expect(parseJsonArgument('{"driver":"null-co","size":1048576,"ro":true,"x":null,"l":[1,2.5,false],"o":{}}')).toEqual({
      driver: 'null-co',
      size: 1048576,
      ro: true,
      x: null,
      l: [1, 2.5, false],
      o: {},
    });
  });

  it('accepts whitespace around tokens, including newlines and tabs', () => {
    expect(parseJsonArgument('{\n "a" :\t1 \r\n}  ')).toEqual({ a: 1 });
  });

  it('accepts single-quoted strings, as QEMU does', () => {
    expect(parseJsonArgument(`{'driver':'null-co','q':'say "hi"','e':'it\\'s'}`)).toEqual({
      driver: 'null-co',
      q: 'say "hi"',
      e: "it's",
    });
  });

  it('decodes escapes, including surrogate pairs', () => {
    expect(parseJsonArgument('{"a":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}')).toEqual({
      a: '"\\/\b\f\n\r\t\u00e9\u{1f600}',
    });
  });

  it('reads numbers as JSON numbers', () => {
    expect(parseJsonArgument('{"a":-0,"b":1e3,"c":-1.5E-2,"d":0}')).toEqual({ a: 0, b: 1000, c: -0.015, d: 0 });
    expect(Object.is(parseJsonArgument('{"a":-0}')['a'], 0)).toBe(true);
  });

  it('keeps a "__proto__" key as an ordinary member', () => {
    const value = parseJsonArgument('{"__proto__":{"polluted":1}}');
    expect(Object.keys(value)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  describe('errors, worded like the reference', () => {
    const cases: Array<[string, string]> = [
      ['{', 'JSON parse error, premature EOI'],
      ['{"a":', 'JSON parse error, premature EOI'],
      ['{"a":[1,', 'JSON parse error, premature EOI'],
      ['{"a"', 'JSON parse error, premature EOI'],
      ['{"driver":}', 'JSON parse error, expecting value'],
      ['{"a":1,}', 'JSON parse error, expecting value'],
      ['{"a":[1,]}', 'JSON parse error, expecting value'],
      ['{"a":[}', 'JSON parse error, expecting value'],
      ['{"a":]}', 'JSON parse error, expecting value'],
      ['{"a":1 x}', 'JSON parse error, expected separator in dict'],
      ['{"a" 1}', 'JSON parse error, missing : in object pair'],
      ['{1:2}', 'JSON parse error, key is not a string in object'],
      ['{"a":[1 2]}', 'JSON parse error, expected separator in list'],
      ['{"a":1,"a":2}', 'JSON parse error, duplicate key'],
      ['{x}', "JSON parse error, invalid keyword 'x'"],
      ['{"a":tru}', "JSON parse error, invalid keyword 'tru'"],
      ['{"a":nullx}', "JSON parse error, invalid keyword 'nullx'"],
      ['{"a":Null}', "JSON parse error, stray 'N'"],
      ['{"a":"\\q"}', 'JSON parse error, invalid escape sequence in string'],
      ['{"a":"x\\u00"}', 'JSON parse error, \\u00" is not a valid Unicode character'],
      ['{"a":"\\u12G4"}', 'JSON parse error, \\u12G4 is not a valid Unicode character'],
      ['{"a":"\\ud800"}', 'JSON parse error, \\ud800 is not a valid Unicode character'],
      ['{"a":"\\ud83dx"}', 'JSON parse error, \\ud83d is not a valid Unicode character'],
      ['{"a":"\\ud83d\\u0041"}', 'JSON parse error, \\ud83d is not a valid Unicode character'],
      ['{"a":"\\udc00"}', 'JSON parse error, \\udc00 is not a valid Unicode character'],
      ['{"driver":"nul', `JSON parse error, stray '"nul'`],
      ['{"a":01}', "JSON parse error, stray '01'"],
      ['{"a":-}', "JSON parse error, stray '-}'"],
      ['{"a":1.}', "JSON parse error, stray '1.}'"],
      ['{"a":1e}', "JSON parse error, stray '1e}'"],
      ['{"a":1.', "JSON parse error, stray '1.'"],
      ['{"a":@}', "JSON parse error, stray '@'"],
      ['{"a":%d}', "JSON parse error, stray '%'"],
      ['{"a":+1}', "JSON parse error, stray '+'"],
      ['{"a":.5}', "JSON parse error, stray '.'"],
      ['{"a":"x\ty"}', `JSON parse error, stray '"x\t'`],
      ['{"a":1 @', "JSON parse error, stray '@'"],
      ['{1:2 @', "JSON parse error, stray '@'"],
      ['{"a":1} x', 'Expecting at most one JSON value'],
      ['{"a":1} {}', 'Expecting at most one JSON value'],
      ['{"a":1}}', 'Expecting at most one JSON value'],
      ['{"a":1}]', 'Expecting at most one JSON value'],
      ['{"a":1},', 'Expecting at most one JSON value'],
      ['{"a":1}  {', 'Expecting at most one JSON value'],
      ['{"a":1}@', 'Expecting at most one JSON value'],
    ];
    for (const [text, message] of cases) {
      it(`refuses ${JSON.stringify(text)}`, () => {
        expect(keyvalErrorOf(() => parseJsonArgument(text))).toBe(message);
      });
    }

    it('accepts nesting up to 1024 levels and refuses deeper', () => {
      const nested = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
      expect(() => parseJsonArgument(nested(1024))).not.toThrow();
      expect(keyvalErrorOf(() => parseJsonArgument(nested(1025)))).toBe('JSON nesting depth limit exceeded');
    });

    it('refuses a text that is not an object', () => {
      expect(keyvalErrorOf(() => parseJsonArgument('[1]'))).toBe('JSON argument must be an object');
    });
  });
});

describe('parseQemuOpts', () => {
  const list: QemuOptsList = {
    name: 'demo',
    impliedKey: 'backend',
    keys: { backend: 'string', path: 'string', server: 'bool', wait: 'bool', delay: 'bool', reconnect: 'number', size: 'size' },
  };

  it('reads the implied first value, keys and the id', () => {
    expect(parseQemuOpts('socket,id=c0,path=/run/q.sock,server=on,wait=off', list)).toEqual({
      values: { id: 'c0', backend: 'socket', path: '/run/q.sock', server: 'on', wait: 'off' },
      help: false,
      warnings: [],
    });
  });

  it('reads ",," as a comma, in the implied value too', () => {
    expect(parseQemuOpts('a,,b,path=x,,y', list).values).toEqual({ backend: 'a,b', path: 'x,y' });
  });

  it('turns short-form booleans into on/off, with the deprecation warning', () => {
    const parsed = parseQemuOpts('socket,server,nowait,nodelay', list);
    expect(parsed.values).toEqual({ backend: 'socket', server: 'on', wait: 'off', delay: 'off' });
    expect(parsed.warnings).toEqual([
      "short-form boolean option 'server' deprecated\nPlease use server=on instead",
      "short-form boolean option 'nowait' deprecated\nPlease use wait=off instead",
      "short-form boolean option 'nodelay' deprecated\nPlease use nodelay=on instead",
    ]);
  });

  it('advises nodelay=off for a bare "delay"', () => {
    expect(parseQemuOpts('x,delay', list).warnings).toEqual([
      "short-form boolean option 'delay' deprecated\nPlease use nodelay=off instead",
    ]);
  });

  it('keeps the first id and lets the last of other repeated keys win', () => {
    expect(parseQemuOpts('x,id=a,id=b,path=1,path=2', list).values).toEqual({ id: 'a', backend: 'x', path: '2' });
  });

  it('reports help for a "help" or "?" flag, but not in the implied position', () => {
    expect(parseQemuOpts('socket,help', list).help).toBe(true);
    expect(parseQemuOpts('socket,?', list).help).toBe(true);
    expect(parseQemuOpts('help', list)).toEqual({ values: { backend: 'help' }, help: false, warnings: [] });
  });

  it('accepts the boolean spellings the reference accepts', () => {
    for (const value of ['on', 'yes', 'true', 'y', 'off', 'no', 'false', 'n']) {
      expect(parseQemuOpts(`x,wait=${value}`, list).values['wait']).toBe(value);
    }
  });

  it('accepts numbers in decimal, octal and hex, signs and leading blanks', () => {
    for (const value of ['5', '0x10', '010', ' 5', '-1', '18446744073709551615']) {
      expect(parseQemuOpts(`x,reconnect=${value}`, list).values['reconnect']).toBe(value);
    }
  });

  it('accepts sizes with suffixes, fractions with a unit, and hex', () => {
    for (const value of ['1', '1k', '1.5M', '0x10', '0x10k', '1b', '15E', ' 1', '+1', '1.0', '1.', '1.k', '0.5k']) {
      expect(parseQemuOpts(`x,size=${value}`, list).values['size']).toBe(value);
    }
  });

  describe('errors, worded like the reference', () => {
    const idHint =
      "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.";
    const sizeHint =
      "Parameter 'size' expects a non-negative number below 2^64\n" +
      'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n' +
      'and exabytes, respectively.';
    const cases: Array<[string, string]> = [
      ['x,bogus=1', "Invalid parameter 'bogus'"],
      ['x,a.b=1', "Invalid parameter 'a.b'"],
      ['x,=1', "Invalid parameter ''"],
      ['id=c0,socket', "Invalid parameter 'socket'"],
      ['x,no', "Invalid parameter ''"],
      ['x,nohelp', "Invalid parameter 'help'"],
      ['x,server=bogus', "Parameter 'server' expects 'on' or 'off'"],
      ['x,wait=ON', "Parameter 'wait' expects 'on' or 'off'"],
      ['x,wait=off,,', "Parameter 'wait' expects 'on' or 'off'"],
      ['x,reconnect=5x', "Parameter 'reconnect' expects a number"],
      ['x,reconnect=', "Parameter 'reconnect' expects a number"],
      ['x,reconnect=08', "Parameter 'reconnect' expects a number"],
      ['x,reconnect=99999999999999999999', "Value '99999999999999999999' is too large for parameter 'reconnect'"],
      ['x,size=16E', "Value '16E' is out of range for parameter 'size'"],
      ['x,size=1 ', sizeHint],
      ['x,size=0x', sizeHint],
      ['x,size=1.5b', sizeHint],
      ['x,size=0.5', sizeHint],
      ['x,size=', sizeHint],
      ['x,size=1.5', sizeHint],
      ['x,size=-1', sizeHint],
      ['x,id=1x', idHint],
      ['x,id=', idHint],
      ['x,id=c0,,x', idHint],
      ['x,bogus=1,id=1x', idHint],
    ];
    for (const [text, message] of cases) {
      it(`refuses ${JSON.stringify(text)}`, () => {
        expect(keyvalErrorOf(() => parseQemuOpts(text, list))).toBe(message);
      });
    }

    it('carries the warnings printed before the error', () => {
      try {
        parseQemuOpts('id=c0,socket', list);
        throw new Error('expected a KeyvalError');
      } catch (error) {
        expect((error as KeyvalError).warnings).toEqual([
          "short-form boolean option 'socket' deprecated\nPlease use socket=on instead",
        ]);
      }
    });
  });
});

describe('qemuOptsHelp', () => {
  it('lists the keys sorted, with their types, under a caption', () => {
    const list: QemuOptsList = {
      name: 'demo',
      impliedKey: 'b',
      keys: { wait: 'bool', b: 'string', size: 'size', rows: 'number' },
    };
    expect(qemuOptsHelp(list)).toBe(
      'demo options:\n  b=<str>\n  rows=<num>\n  size=<size>\n  wait=<bool (on/off)>\n',
    );
  });
});
