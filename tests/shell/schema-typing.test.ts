import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QmpSchema, SchemaEntity } from '../../src/shell/schema';
import { ArgumentTyper, parseInteger, TypingError } from '../../src/shell/typing';
import { CommandBuilder } from '../../src/shell/command-builder';
import { toQmpMessage } from '../../src/shell/qmp-message';

const fixture = path.join(__dirname, '..', 'fixtures', 'qsd-7.2-qmp-schema.json');
const schema = new QmpSchema(JSON.parse(fs.readFileSync(fixture, 'utf8')) as SchemaEntity[]);
const typer = new ArgumentTyper(schema);

function send(line: string, builder = new CommandBuilder()): unknown {
  const built = builder.build(line);
  return built === null ? null : toQmpMessage(built, typer);
}

function args(line: string): unknown {
  return (send(line) as { arguments: unknown }).arguments;
}

describe('QmpSchema', () => {
  it('lists the commands of the reference daemon', () => {
    const names = schema.commandNames();
    expect(names).toContain('blockdev-add');
    expect(names).toContain('query-jobs');
    expect(names).toHaveLength(74);
  });

  it('resolves a command argument through the masked type names', () => {
    const argType = schema.argumentType('block-job-set-speed')!;
    expect(schema.label(schema.memberType(argType, 'device')!)).toBe('str');
    expect(schema.label(schema.memberType(argType, 'speed')!)).toBe('int');
  });

  it('adds the members of the variant the union tag selects', () => {
    const argType = schema.argumentType('blockdev-add')!;
    const common = schema.objectMembers(argType).map((member) => member.name);
    expect(common).toContain('node-name');
    expect(common).not.toContain('filename');
    const file = schema.objectMembers(argType, (tag) => (tag === 'driver' ? 'file' : undefined));
    expect(file.find((member) => member.name === 'filename')).toEqual({
      name: 'filename',
      type: 'str',
      optional: false,
    });
    expect(file.find((member) => member.name === 'node-name')?.optional).toBe(true);
  });

  it('lists enum values, also through an alternate', () => {
    const argType = schema.argumentType('blockdev-add')!;
    expect(schema.valueChoices(schema.memberType(argType, 'driver')!)).toContain('qcow2');
    expect(schema.valueChoices(schema.memberType(argType, 'read-only')!)).toEqual(['true', 'false']);
  });
});

describe('ArgumentTyper with the schema', () => {
  it('keeps a node named 1 a string where the schema says str', () => {
    expect(args('block-job-set-speed device=1 speed=100')).toEqual({ device: '1', speed: 100 });
  });

  it('keeps a node named true a string where the schema says str', () => {
    expect(args('blockdev-del node-name=true')).toEqual({ 'node-name': 'true' });
  });

  it('converts booleans where the schema says bool, including on and off', () => {
    expect(args('blockdev-add driver=null-co node-name=n0 read-only=on size=1M')).toEqual({
      driver: 'null-co',
      'node-name': 'n0',
      'read-only': true,
      size: 1048576,
    });
  });

  it('types the members of the selected union variant', () => {
    expect(args('blockdev-add driver=file node-name=1 filename=2 aio-max-batch=4 drop-cache=false')).toEqual({
      driver: 'file',
      'node-name': '1',
      filename: '2',
      'aio-max-batch': 4,
      'drop-cache': false,
    });
  });

  it('follows dotted keys into a nested union', () => {
    expect(args('blockdev-create job-id=7 options.driver=qcow2 options.file=42 options.size=64M')).toEqual({
      'job-id': '7',
      options: { driver: 'qcow2', file: '42', size: 67108864 },
    });
  });

  it('follows dotted keys into the object branch of an alternate', () => {
    expect(args('blockdev-add driver=raw node-name=r file.driver=file file.filename=123')).toEqual({
      driver: 'raw',
      'node-name': 'r',
      file: { driver: 'file', filename: '123' },
    });
  });

  it('takes the string branch of an alternate for a bare word', () => {
    expect(args('blockdev-add driver=raw node-name=r file=0')).toEqual({ driver: 'raw', 'node-name': 'r', file: '0' });
  });

  it('types transaction actions through the action variants', () => {
    expect(send('transaction( block-dirty-bitmap-add node=1 name=2 granularity=64k persistent=off )')).toEqual({
      execute: 'transaction',
      arguments: {
        actions: [
          { type: 'block-dirty-bitmap-add', data: { node: '1', name: '2', granularity: 65536, persistent: false } },
        ],
      },
    });
  });

  it('leaves explicit JSON values alone', () => {
    expect(args('block-job-set-speed device=j speed="5"')).toEqual({ device: 'j', speed: '5' });
  });

  it('guesses like qmp-shell for keys the schema does not know', () => {
    expect(args('query-jobs bogus=12 flag=true')).toEqual({ bogus: 12, flag: true });
  });

  it('guesses like qmp-shell for commands the schema does not know', () => {
    expect(args('no-such-command a=1 b=x')).toEqual({ a: 1, b: 'x' });
  });

  it('refuses a word that cannot be an integer where one is expected', () => {
    expect(() => args('block-job-set-speed device=j speed=fast')).toThrow(TypingError);
    expect(() => args('block-job-set-speed device=j speed=fast')).toThrow("'speed' expects an integer, got 'fast'");
  });

  it('refuses a bare word where an object is expected', () => {
    expect(() => args('blockdev-create job-id=j options=x')).toThrow(/'options' expects union/);
  });

  it('sends integers beyond 2^53 exactly', () => {
    expect(args('block-set-write-threshold node-name=n write-threshold=18446744073709551615')).toEqual({
      'node-name': 'n',
      'write-threshold': 18446744073709551615n,
    });
  });
});

describe('parseInteger', () => {
  it('reads decimal, hex and binary size suffixes', () => {
    expect(parseInteger('42')).toBe(42);
    expect(parseInteger('-7')).toBe(-7);
    expect(parseInteger('0x10')).toBe(16);
    expect(parseInteger('4k')).toBe(4096);
    expect(parseInteger('1G')).toBe(1073741824);
    expect(parseInteger('2MiB')).toBe(2097152);
    expect(parseInteger('16E')).toBe(18446744073709551616n);
  });

  it('rejects anything else', () => {
    expect(parseInteger('1.5')).toBeUndefined();
    expect(parseInteger('ten')).toBeUndefined();
    expect(parseInteger('')).toBeUndefined();
  });
});
