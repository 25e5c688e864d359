import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandList, introspect } from '../../src/qmp/schema/introspection';
import { loadSchema, SCHEMA_DIR, type Member, type Schema, type TypeDef } from '../../src/qmp/schema/schema';

/** One SchemaInfo entry, loosely typed: both sides come from JSON. */
interface Entity {
  name: string;
  'meta-type': string;
  'json-type'?: string;
  'element-type'?: string;
  'arg-type'?: string;
  'ret-type'?: string;
  'allow-oob'?: boolean;
  members?: Array<{ name?: string; type?: string; default?: null; features?: string[] }>;
  values?: string[];
  tag?: string;
  variants?: Array<{ case: string; type: string }>;
  features?: string[];
}

const REPO = path.join(__dirname, '..', '..');
const FIXTURES = path.join(REPO, 'tests', 'fixtures');
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'qsd-7.2-qmp-schema.json'), 'utf8')) as Entity[];
const referenceCommands = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'qsd-7.2-commands.json'), 'utf8')) as Array<{ name: string }>;

function index(entities: Entity[]): Map<string, Entity> {
  return new Map(entities.map((e) => [e.name, e]));
}

function sameFeatures(a: string[] | undefined, b: string[] | undefined): boolean {
  return JSON.stringify([...(a ?? [])].sort()) === JSON.stringify([...(b ?? [])].sort());
}

/**
 * Compares qbd's introspection with the reference's, following masked type
 * names on both sides from each command and event qbd defines. Returns one
 * line per difference, naming the path from the command to it.
 */
function differences(oursList: Entity[], theirsList: Entity[]): string[] {
  const ours = index(oursList);
  const theirs = index(theirsList);
  const out: string[] = [];
  const compared = new Set<string>();

  const compareType = (a: string, b: string, where: string): void => {
    // Recursive types (BlockdevRef inside BlockdevOptions) are compared once per pair.
    const key = `${a}\u0000${b}`;
    if (compared.has(key)) return;
    compared.add(key);
    const x = ours.get(a);
    const y = theirs.get(b);
    if (!x || !y) {
      out.push(`${where}: type ${x ? b : a} is not defined (${x ? 'reference' : 'qbd'})`);
      return;
    }
    if (x['meta-type'] !== y['meta-type']) {
      out.push(`${where}: qbd has a ${x['meta-type']}, the reference a ${y['meta-type']}`);
      return;
    }
    if (!sameFeatures(x.features, y.features)) out.push(`${where}: features [${x.features ?? []}] differ from [${y.features ?? []}]`);
    switch (x['meta-type']) {
      case 'builtin':
        if (x.name !== y.name) out.push(`${where}: qbd has ${x.name}, the reference ${y.name}`);
        break;
      case 'array':
        compareType(x['element-type'] ?? '', y['element-type'] ?? '', `${where}[]`);
        break;
      case 'enum': {
        const extra = (x.values ?? []).filter((v) => !(y.values ?? []).includes(v));
        if (extra.length > 0) out.push(`${where}: values ${extra.join(', ')} are not in the reference`);
        for (const m of x.members ?? []) {
          const n = (y.members ?? []).find((r) => r.name === m.name);
          if (n && !sameFeatures(m.features, n.features)) out.push(`${where}: value ${m.name} has other features`);
        }
        break;
      }
      case 'alternate': {
        const xs = x.members ?? [];
        const ys = y.members ?? [];
        if (xs.length !== ys.length) out.push(`${where}: ${xs.length} branches, the reference has ${ys.length}`);
        xs.forEach((m, i) => {
          if (ys[i]) compareType(m.type ?? '', ys[i].type ?? '', `${where}<branch ${i}>`);
        });
        break;
      }
      case 'object': {
        const xs = x.members ?? [];
        const ys = y.members ?? [];
        const names = (list: typeof xs) => list.map((m) => m.name).join(', ');
        if (names(xs) !== names(ys)) {
          out.push(`${where}: members (${names(xs)}) differ from the reference's (${names(ys)})`);
        }
        for (const m of xs) {
          const n = ys.find((r) => r.name === m.name);
          if (!n) continue;
          const at = `${where}.${m.name}`;
          if ('default' in m !== 'default' in n) out.push(`${at}: ${'default' in m ? 'optional' : 'mandatory'}, the reference's is not`);
          if (!sameFeatures(m.features, n.features)) out.push(`${at}: features [${m.features ?? []}] differ from [${n.features ?? []}]`);
          compareType(m.type ?? '', n.type ?? '', at);
        }
        if (x.tag !== y.tag) out.push(`${where}: tag ${x.tag} differs from the reference's ${y.tag}`);
        for (const v of x.variants ?? []) {
          const w = (y.variants ?? []).find((r) => r.case === v.case);
          if (!w) out.push(`${where}: variant ${v.case} is not in the reference`);
          else compareType(v.type, w.type, `${where}{${x.tag}=${v.case}}`);
        }
        break;
      }
    }
  };

  for (const x of oursList) {
    if (x['meta-type'] !== 'command' && x['meta-type'] !== 'event') continue;
    const y = theirs.get(x.name);
    if (!y || y['meta-type'] !== x['meta-type']) {
      out.push(`${x.name}: no such ${x['meta-type']} in the reference`);
      continue;
    }
    if (!sameFeatures(x.features, y.features)) out.push(`${x.name}: features [${x.features ?? []}] differ from [${y.features ?? []}]`);
    if ((x['allow-oob'] ?? false) !== (y['allow-oob'] ?? false)) out.push(`${x.name}: allow-oob differs`);
    compareType(x['arg-type'] ?? '', y['arg-type'] ?? '', `${x.name}(arguments)`);
    if (x['meta-type'] === 'command') compareType(x['ret-type'] ?? '', y['ret-type'] ?? '', `${x.name}(return)`);
  }
  return out;
}

/** Every type name an entry refers to. */
function references(e: Entity): string[] {
  const refs: string[] = [];
  if (e['arg-type'] !== undefined) refs.push(e['arg-type']);
  if (e['ret-type'] !== undefined) refs.push(e['ret-type']);
  if (e['element-type'] !== undefined) refs.push(e['element-type']);
  if (e['meta-type'] === 'object' || e['meta-type'] === 'alternate') {
    for (const m of e.members ?? []) refs.push(m.type ?? '');
  }
  for (const v of e.variants ?? []) refs.push(v.type);
  return refs;
}

function qbdSchema(): Schema {
  return loadSchema(SCHEMA_DIR);
}

function qbdIntrospection(schema: Schema = qbdSchema()): Entity[] {
  return introspect(schema) as Entity[];
}

/** Replaces `name` in `schema` with a copy whose member `member` is changed by `change`. */
function alterMember(schema: Schema, name: string, member: string, change: (m: Member) => Member): void {
  const def = schema.type(name);
  if (def.meta !== 'struct' && def.meta !== 'union') throw new Error(`${name} has no members`);
  if (!def.members.some((m) => m.name === member)) throw new Error(`${name} has no member ${member}`);
  const copy: TypeDef = { ...def, members: def.members.map((m) => (m.name === member ? change({ ...m }) : m)) };
  schema.types.set(name, copy);
}

describe('qbd schema against qemu-storage-daemon 7.2', () => {
  it('finds the schema directory of the repository', () => {
    expect(SCHEMA_DIR).toBe(path.join(REPO, 'schema'));
  });

  it('has a handler for every schema command and a schema entry for every handler', async () => {
    // The dispatcher refuses to start when the two disagree.
    const { Daemon } = await import('../../src/daemon');
    expect(() => new Daemon()).not.toThrow();
  });

  it('gives every command the arguments, return type and features of the reference', () => {
    expect(differences(qbdIntrospection(), reference)).toEqual([]);
  });

  it('describes no command the reference lacks', () => {
    const names = new Set(reference.filter((e) => e['meta-type'] === 'command').map((e) => e.name));
    for (const e of qbdIntrospection()) {
      if (e['meta-type'] === 'command') expect(names.has(e.name), e.name).toBe(true);
    }
  });

  it('has every command of the reference', () => {
    const ours = new Set(qbdSchema().commands.keys());
    expect(referenceCommands.map((c) => c.name).filter((name) => !ours.has(name))).toEqual([]);
  });

  it('lists commands for query-commands in the reference order', () => {
    const schema = qbdSchema();
    const ours = new Set(schema.commands.keys());
    expect(commandList(schema)).toEqual(referenceCommands.filter((c) => ours.has(c.name)));
  });

  it('uses only the keys the reference uses for each meta-type', () => {
    const keys = new Map<string, Set<string>>();
    for (const e of reference) {
      const set = keys.get(e['meta-type']) ?? new Set(['features']);
      for (const k of Object.keys(e)) set.add(k);
      keys.set(e['meta-type'], set);
    }
    for (const e of qbdIntrospection()) {
      const allowed = keys.get(e['meta-type']);
      expect(allowed, e['meta-type']).toBeDefined();
      expect(Object.keys(e).filter((k) => !allowed!.has(k)), e.name).toEqual([]);
    }
  });

  it('names the empty object "0" and uses it for commands without arguments or result', () => {
    const entries = index(qbdIntrospection());
    expect(entries.get('0')).toEqual({ name: '0', 'meta-type': 'object', members: [] });
    expect(index(reference).get('0')).toEqual({ name: '0', 'meta-type': 'object', members: [] });
    expect(entries.get('quit')).toMatchObject({ 'arg-type': '0', 'ret-type': '0' });
    expect(entries.get('query-version')).toMatchObject({ 'arg-type': '0' });
    expect(entries.get('blockdev-del')).toMatchObject({ 'ret-type': '0' });
  });

  it('shows every integer type as int and masks every other type name', () => {
    const builtins = new Map([
      ['str', 'string'],
      ['int', 'int'],
      ['number', 'number'],
      ['bool', 'boolean'],
      ['null', 'null'],
      ['any', 'value'],
    ]);
    for (const e of qbdIntrospection()) {
      if (e['meta-type'] === 'builtin') expect(e['json-type']).toBe(builtins.get(e.name));
      else if (e['meta-type'] === 'array') expect(e.name).toBe(`[${e['element-type']}]`);
      else if (e['meta-type'] !== 'command' && e['meta-type'] !== 'event') expect(e.name).toMatch(/^(0|[1-9][0-9]*)$/);
    }
  });
});

describe('introspect()', () => {
  it('defines every name once and every referenced type', () => {
    const entries = qbdIntrospection();
    const names = entries.map((e) => e.name);
    expect(new Set(names).size).toBe(names.length);
    const defined = new Set(names);
    const referenced = new Set(entries.flatMap(references));
    expect([...referenced].filter((n) => !defined.has(n))).toEqual([]);
    // Like QEMU, it describes only the types something references.
    const types = entries.filter((e) => e['meta-type'] !== 'command' && e['meta-type'] !== 'event');
    expect(types.map((e) => e.name).filter((n) => !referenced.has(n))).toEqual([]);
  });

  it('gives the same answer on every run', () => {
    const schema = qbdSchema();
    const first = JSON.stringify(introspect(schema));
    expect(JSON.stringify(introspect(schema))).toBe(first);
    expect(JSON.stringify(introspect(qbdSchema()))).toBe(first);
  });

  it('lists commands and events before types, types in order of first reference', () => {
    const entries = qbdIntrospection();
    const kinds = entries.map((e) => (e['meta-type'] === 'command' || e['meta-type'] === 'event' ? 'entry' : 'type'));
    expect(kinds.indexOf('type')).toBeGreaterThan(kinds.lastIndexOf('entry'));
    const numbers = entries.map((e) => e.name).filter((n) => /^\d+$/.test(n)).map(Number);
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
  });

  it('gives tag values without a variant of their own the empty object, as QAPI does', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qbd-schema-'));
    try {
      const defs = [
        { enum: 'Kind', data: ['one', 'two', 'three'] },
        { struct: 'One', data: { x: 'int' } },
        { union: 'Thing', base: { kind: 'Kind' }, discriminator: 'kind', data: { two: 'One' } },
        { command: 'make', data: 'Thing', boxed: true },
      ];
      fs.writeFileSync(path.join(dir, 'test.json'), JSON.stringify(defs));
      const entries = index(introspect(loadSchema(dir)) as Entity[]);
      const thing = entries.get(entries.get('make')?.['arg-type'] ?? '');
      const one = thing?.variants?.find((v) => v.case === 'two')?.type;
      expect(thing?.variants).toEqual([
        { case: 'two', type: one },
        { case: 'one', type: '0' },
        { case: 'three', type: '0' },
      ]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the comparison with the reference', () => {
  const alterations: Array<[string, (schema: Schema) => void, RegExp]> = [
    ['a renamed member', (s) => alterMember(s, 'q_obj_blockdev-del-arg', 'node-name', (m) => ({ ...m, name: 'node' })), /^blockdev-del\(arguments\): members/],
    ['a member made optional', (s) => alterMember(s, 'BlockdevOptionsFile', 'filename', (m) => ({ ...m, optional: true })), /^blockdev-add\(arguments\)\{driver=file\}\.filename: optional/],
    ['a member given another type', (s) => alterMember(s, 'BlockdevOptionsNull', 'size', (m) => ({ ...m, type: 'str' })), /\{driver=null-aio\}\.size: qbd has str, the reference int/],
    ['a return member given another type', (s) => alterMember(s, 'VersionTriple', 'major', (m) => ({ ...m, type: 'bool' })), /^query-version\(return\)\.qemu\.major/],
    ['a member deep inside a return type made mandatory', (s) => alterMember(s, 'SnapshotInfo', 'icount', (m) => ({ ...m, optional: false })), /\(return\)\[\]\.(inserted\.)?image\.snapshots\[\]\.icount: mandatory/],
    ['a member reached through a recursive alternate given another type', (s) => alterMember(s, 'BlockdevOptionsRaw', 'offset', (m) => ({ ...m, type: 'bool' })), /\{driver=raw\}\.offset: qbd has bool/],
    ['a member losing its feature', (s) => alterMember(s, 'BlockdevOptionsFile', 'x-check-cache-dropped', (m) => ({ ...m, features: [] })), /x-check-cache-dropped: features/],
    [
      'an enum value the reference lacks',
      (s) => {
        const def = s.type('BlockdevDiscardOptions');
        if (def.meta === 'enum') s.types.set(def.name, { ...def, values: [...def.values, 'zap'] });
      },
      /\.discard: values zap/,
    ],
    [
      'a command losing its feature',
      (s) => {
        const cmd = s.commands.get('x-debug-query-block-graph')!;
        s.commands.set(cmd.name, { ...cmd, features: [] });
      },
      /^x-debug-query-block-graph: features/,
    ],
    [
      'a command allowing out-of-band execution',
      (s) => {
        const cmd = s.commands.get('quit')!;
        s.commands.set(cmd.name, { ...cmd, allowOob: true });
      },
      /^quit: allow-oob/,
    ],
  ];

  for (const [what, alter, expected] of alterations) {
    it(`fails on ${what}`, () => {
      const schema = qbdSchema();
      alter(schema);
      const found = differences(qbdIntrospection(schema), reference);
      expect(found.some((line) => expected.test(line)), found.join('\n')).toBe(true);
    });
  }
});
