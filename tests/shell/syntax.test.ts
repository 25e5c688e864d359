import { describe, it, expect } from 'vitest';
import { tokenize, parseArguments, ShellSyntaxError, RawValue } from '../../src/shell/syntax';
import { CommandBuilder, LineAssembler } from '../../src/shell/command-builder';
import { ArgumentTyper, guessValue } from '../../src/shell/typing';
import { toQmpMessage } from '../../src/shell/qmp-message';
import { parseRelaxedJson } from '../../src/shell/relaxed-json';

/** Builds the message a line sends, guessing types as qmp-shell does (no schema). */
function messageFor(line: string, builder = new CommandBuilder()): unknown {
  const built = builder.build(line);
  return built === null ? null : toQmpMessage(built, new ArgumentTyper());
}

function plain(raw: RawValue): unknown {
  return guessValue(raw);
}

describe('tokenize', () => {
  it('splits words on white space', () => {
    expect(tokenize('  query-jobs   a=1 b=2 ').words).toEqual(['query-jobs', 'a=1', 'b=2']);
  });

  it('keeps quoted spaces inside one word', () => {
    expect(tokenize(`cmd a="x y" b='p q'`).words).toEqual(['cmd', 'a="x y"', "b='p q'"]);
  });

  it('keeps spaces inside JSON brackets inside one word', () => {
    expect(tokenize('cmd a={"k": [1, 2]} b=3').words).toEqual(['cmd', 'a={"k": [1, 2]}', 'b=3']);
  });

  it('reports brackets left open at the end', () => {
    expect(tokenize('cmd a={"k": [1,').openBrackets).toBe(2);
    expect(tokenize('cmd a={"k": 1}').openBrackets).toBe(0);
  });

  it('does not count a bracket in the middle of a bare word as JSON', () => {
    const result = tokenize('cmd filename=/images/disk[1].img x=1');
    expect(result.openBrackets).toBe(0);
    expect(result.words).toEqual(['cmd', 'filename=/images/disk[1].img', 'x=1']);
  });

  it('ignores brackets inside quoted strings', () => {
    expect(tokenize(`cmd a="{[" b={"x": "]}"`).openBrackets).toBe(1);
  });

  it('tells whether the text ends with white space', () => {
    expect(tokenize('cmd a').endsWithSpace).toBe(false);
    expect(tokenize('cmd a ').endsWithSpace).toBe(true);
  });
});

describe('parseArguments', () => {
  it('builds nested objects from dotted keys', () => {
    const args = parseArguments(['options.driver=file', 'options.filename=/img', 'size=1']);
    expect(plain(args)).toEqual({ options: { driver: 'file', filename: '/img' }, size: 1 });
  });

  it('guesses integers and booleans like qmp-shell when no schema is known', () => {
    expect(plain(parseArguments(['a=12', 'b=-3', 'c=True', 'd=false', 'e=name']))).toEqual({
      a: 12,
      b: -3,
      c: true,
      d: false,
      e: 'name',
    });
  });

  it('reads JSON values in brackets', () => {
    expect(plain(parseArguments(['a=[1, "x", null]', 'b={"k": {"n": true}}']))).toEqual({
      a: [1, 'x', null],
      b: { k: { n: true } },
    });
  });

  it('reads Python-style literals in brackets', () => {
    expect(plain(parseArguments(["a={'k': True, 'n': None, 'l': [1, 2,]}"]))).toEqual({
      a: { k: true, n: null, l: [1, 2] },
    });
  });

  it('makes a quoted value a string, even when it looks like a number', () => {
    expect(plain(parseArguments(['a="12"', "b='true'", 'c="with space"']))).toEqual({
      a: '12',
      b: 'true',
      c: 'with space',
    });
  });

  it('keeps an equals sign inside the value', () => {
    expect(plain(parseArguments(['opt=a=b']))).toEqual({ opt: 'a=b' });
  });

  it('merges dotted keys into an object given as JSON', () => {
    expect(plain(parseArguments(['o={"a": 1}', 'o.b=2']))).toEqual({ o: { a: 1, b: 2 } });
  });

  it('rejects a word without an equals sign', () => {
    expect(() => parseArguments(['novalue'])).toThrow("Expected a key=value pair, got 'novalue'");
  });

  it('rejects a key set twice', () => {
    expect(() => parseArguments(['a=1', 'a=2'])).toThrow('Cannot set "a" multiple times');
  });

  it('rejects a key used both as a leaf and as an object', () => {
    expect(() => parseArguments(['a=1', 'a.b=2'])).toThrow('Cannot use "a" as both leaf and non-leaf key');
    expect(() => parseArguments(['a.b=2', 'a=1'])).toThrow('Cannot use "a" as both leaf and non-leaf key');
  });

  it('rejects malformed JSON with the key in the message', () => {
    expect(() => parseArguments(['a={"x": }'])).toThrow(ShellSyntaxError);
    expect(() => parseArguments(['a={"x": }'])).toThrow(/'a'/);
  });
});

describe('parseRelaxedJson', () => {
  it('keeps integers beyond 2^53 exact as BigInt', () => {
    expect(parseRelaxedJson('[18446744073709551615]')).toEqual([18446744073709551615n]);
  });

  it('accepts bare identifier keys', () => {
    expect(parseRelaxedJson("{driver: 'file', read-only: true}")).toEqual({ driver: 'file', 'read-only': true });
  });

  it('reports where the text goes wrong', () => {
    expect(() => parseRelaxedJson('{"a": 1 "b"}')).toThrow(/position 8/);
  });
});

describe('CommandBuilder', () => {
  it('builds a command with arguments always present', () => {
    expect(messageFor('query-jobs')).toEqual({ execute: 'query-jobs', arguments: {} });
  });

  it('returns nothing for an empty line', () => {
    expect(messageFor('   ')).toBeNull();
  });

  it('sends a raw JSON line as it is', () => {
    expect(messageFor('{"execute": "query-version", "id": 7}')).toEqual({ execute: 'query-version', id: 7 });
  });

  it('rejects a raw JSON line that is not an object', () => {
    expect(() => messageFor('{"unterminated": ')).toThrow(/Invalid JSON/);
  });

  it('collects transaction actions until the closing parenthesis', () => {
    const builder = new CommandBuilder();
    expect(messageFor('transaction(', builder)).toBeNull();
    expect(builder.inTransaction).toBe(true);
    expect(messageFor('block-dirty-bitmap-add node=disk name=b0', builder)).toBeNull();
    expect(messageFor('abort', builder)).toBeNull();
    expect(messageFor(')', builder)).toEqual({
      execute: 'transaction',
      arguments: {
        actions: [
          { type: 'block-dirty-bitmap-add', data: { node: 'disk', name: 'b0' } },
          { type: 'abort', data: {} },
        ],
      },
    });
    expect(builder.inTransaction).toBe(false);
  });

  it('accepts the one-line transaction form', () => {
    expect(messageFor('transaction( block-dirty-bitmap-clear node=disk name=b0 )')).toEqual({
      execute: 'transaction',
      arguments: { actions: [{ type: 'block-dirty-bitmap-clear', data: { node: 'disk', name: 'b0' } }] },
    });
  });

  it('takes a raw JSON line inside a transaction as one action', () => {
    const builder = new CommandBuilder();
    builder.build('transaction(');
    builder.build('{"type": "abort", "data": {}}');
    expect(messageFor(')', builder)).toEqual({
      execute: 'transaction',
      arguments: { actions: [{ type: 'abort', data: {} }] },
    });
  });

  it('rejects input after the closing parenthesis', () => {
    const builder = new CommandBuilder();
    builder.build('transaction(');
    expect(() => builder.build(') extra')).toThrow('Unexpected input after close of Transaction sub-shell');
  });
});

describe('LineAssembler', () => {
  it('joins lines while a bracket is open', () => {
    const assembler = new LineAssembler();
    expect(assembler.push('{"execute": "query-jobs",')).toBeNull();
    expect(assembler.continuing).toBe(true);
    expect(assembler.push(' "arguments": {')).toBeNull();
    const text = assembler.push('}}');
    expect(text).not.toBeNull();
    expect(JSON.parse(text!)).toEqual({ execute: 'query-jobs', arguments: {} });
    expect(assembler.continuing).toBe(false);
  });

  it('continues a key=value line whose JSON value is open', () => {
    const assembler = new LineAssembler();
    expect(assembler.push('transaction actions=[')).toBeNull();
    const text = assembler.push('{"type": "abort", "data": {}} ]');
    expect(messageFor(text!)).toEqual({
      execute: 'transaction',
      arguments: { actions: [{ type: 'abort', data: {} }] },
    });
  });

  it('passes a complete line straight through', () => {
    expect(new LineAssembler().push('query-jobs')).toBe('query-jobs');
  });
});
