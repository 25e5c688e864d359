/**
 * Argument validation words its errors like qemu-storage-daemon, and the
 * dispatcher refuses a handler without schema entry or the reverse.
 */
import { describe, expect, it } from 'vitest';
import { defineCommand } from '../../src/qmp/command';
import { Dispatcher } from '../../src/qmp/dispatcher';
import { loadSchema, SCHEMA_DIR } from '../../src/qmp/schema/schema';
import { ArgumentValidator } from '../../src/qmp/schema/validator';
import { TOP, Visitor } from '../../src/qmp/schema/visitor';
import { keyvalTyping, parseSize } from '../../src/cli/keyval-typing';

const schema = loadSchema(SCHEMA_DIR);
const validator = new ArgumentValidator(schema);

function error(command: string, args: Record<string, unknown>): string {
  try {
    validator.validate(command, args);
    return 'accepted';
  } catch (e) {
    return (e as Error).message;
  }
}

describe('argument validation', () => {
  it('accepts valid arguments unchanged', () => {
    const args = { driver: 'null-co', 'node-name': 'n', size: 4096, cache: { direct: true } };
    expect(validator.validate('blockdev-add', args)).toBe(args);
  });

  it.each([
    ['blockdev-add', {}, "Parameter 'driver' is missing"],
    ['blockdev-add', { driver: 'nope' }, "Parameter 'driver' does not accept value 'nope'"],
    ['blockdev-add', { driver: 'null-co', size: 'x' }, "Invalid parameter type for 'size', expected: integer"],
    ['blockdev-add', { driver: 'null-co', cache: { direct: 1 } }, "Invalid parameter type for 'cache.direct', expected: boolean"],
    ['blockdev-add', { driver: 'raw', file: 5 }, "Invalid parameter type for 'file', expected: BlockdevRef"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'file' } }, "Parameter 'file.filename' is missing"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'file', filename: 'x', zz: 1 } }, "Parameter 'file.zz' is unexpected"],
    ['blockdev-add', { bogus: 2, 'node-name': 5, driver: 'null-co' }, "Invalid parameter type for 'node-name', expected: string"],
    ['qmp_capabilities', { enable: 'oob' }, "Invalid parameter type for 'enable', expected: array"],
    ['query-version', { a: 1, b: 2 }, "Parameter 'b' is unexpected"],
    ['x-blockdev-set-iothread', { 'node-name': 'x', iothread: 5 }, "Invalid parameter type for 'iothread', expected: StrOrNull"],
  ])('%s %j → %s', (command, args, message) => {
    expect(error(command, args as Record<string, unknown>)).toBe(message);
  });

  // Below the top level QEMU names most problems by their full path, but an
  // enum value, an alternate's kind and a sized integer's range by the member alone.
  it.each([
    ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'allow' }, { match: 'y' }] }, "Parameter 'rules[1].policy' is missing"],
    ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'bad' }] }, "Parameter 'policy' does not accept value 'bad'"],
    ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 5, policy: 'allow' }] }, "Invalid parameter type for 'rules[0].match', expected: string"],
    ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'allow', zz: 1 }] }, "Parameter 'rules[0].zz' is unexpected"],
    ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [5] }, "Invalid parameter type for 'rules[0]', expected: object"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'file', filename: 'x', aio: 'bad' } }, "Parameter 'aio' does not accept value 'bad'"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'file', filename: 'x', aio: 5 } }, "Invalid parameter type for 'file.aio', expected: string"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'raw', file: { driver: 'file' } } }, "Parameter 'file.file.filename' is missing"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'raw', file: 5 } }, "Invalid parameter type for 'file', expected: BlockdevRef"],
    ['blockdev-add', { driver: 'raw', file: { driver: 'null-co', 'latency-ns': 'x' } }, "Parameter 'file.latency-ns' expects uint64"],
    ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { name: 'b' } }] }, "Parameter 'actions[0].data.node' is missing"],
    ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b', granularity: -1 } }] }, "Parameter 'granularity' expects uint32_t"],
    ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', bitmaps: ['a', 5] }, "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"],
  ])('nested: %s %j → %s', (command, args, message) => {
    expect(error(command, args as Record<string, unknown>)).toBe(message);
  });

  it('accepts integers beyond 2^53 where the type allows them', () => {
    expect(error('blockdev-add', { driver: 'null-co', 'node-name': 'n', size: 2n ** 60n })).toBe('accepted');
  });
});

describe('command-line typing', () => {
  const visitor = new Visitor(schema, keyvalTyping);

  it('types key=value strings from the schema', () => {
    expect(visitor.visit({ driver: 'null-co', 'node-name': 'n', size: '0x100000', 'read-zeroes': 'on', cache: { direct: 'off' } }, 'BlockdevOptions', TOP)).toEqual({
      driver: 'null-co',
      'node-name': 'n',
      size: 1 << 20,
      'read-zeroes': true,
      cache: { direct: false },
    });
  });

  it('takes size suffixes only where the schema says size, as QEMU does', () => {
    expect(() => visitor.visit({ driver: 'null-co', size: '1M' }, 'BlockdevOptions', TOP)).toThrow("Parameter 'size' expects integer");
    expect(visitor.visit({ 'job-id': 'j', options: { driver: 'file', filename: 'f', size: '1M' } }, 'q_obj_blockdev-create-arg', TOP)).toMatchObject({ options: { size: 1 << 20 } });
  });

  it('indexes list elements with a dot, as key=value syntax does', () => {
    expect(() => visitor.visit({ 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x' }] }, 'ObjectOptions', TOP)).toThrow("Parameter 'rules.0.policy' is missing");
  });

  it('keeps a node name that looks like a number a string', () => {
    expect(visitor.visit({ driver: 'raw', 'node-name': '1', file: '2' }, 'BlockdevOptions', TOP)).toMatchObject({ 'node-name': '1', file: '2' });
  });

  it('parses sizes with suffixes and fractions like QEMU', () => {
    expect(parseSize('4k')).toBe(4096n);
    expect(parseSize('1.5G')).toBe(3n * 2n ** 29n);
    expect(parseSize('0x10')).toBe(16n);
    expect(parseSize('-1')).toBeUndefined();
    expect(parseSize('16E')).toBeUndefined();
  });
});

describe('the dispatcher', () => {
  it('refuses a handler that has no schema entry', () => {
    const handlers = [...schema.commands.keys()].map((n) => defineCommand(n, () => ({})));
    expect(() => new Dispatcher(schema, validator, [...handlers, defineCommand('not-in-schema', () => ({}))])).toThrow('handler not-in-schema has no schema entry');
  });

  it('refuses a schema command that has no handler', () => {
    const handlers = [...schema.commands.keys()].filter((n) => n !== 'quit').map((n) => defineCommand(n, () => ({})));
    expect(() => new Dispatcher(schema, validator, handlers)).toThrow('schema command quit has no handler');
  });
});
