/**
 * `query-qmp-schema` and `query-commands`, derived from the schema the way
 * QEMU's QAPI generator derives them, so a client sees the same shapes:
 *
 * - Commands and events come first, in definition order; then every type
 *   they reach, in the order it was first referenced. Types nothing
 *   references are left out.
 * - Type names are masked as decimal strings, numbered by first reference.
 *   The empty object (the argument and return type of commands without
 *   either) is always listed and numbered first, so it is "0" as in the
 *   reference, whatever command the schema defines first.
 * - Every integer builtin (int8…uint64, size) is shown as `int`, and arrays
 *   of them as `[int]`.
 * - A union lists a variant for every value of its tag's enum; values
 *   without a variant of their own get the empty object, as QAPI does.
 */
import { BUILTINS, type Member, type Schema, type TypeDef, type TypeRef } from './schema';

/** The implicit type with no members; named like QAPI's internal one. */
const EMPTY_OBJECT = 'q_empty';

const INTEGER_BUILTINS = new Set(['int', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64', 'size']);

const JSON_TYPES: Record<string, string> = {
  str: 'string',
  int: 'int',
  number: 'number',
  bool: 'boolean',
  null: 'null',
  any: 'value',
};

/** A type as introspection sees it: a builtin or defined name, or an array of one. */
type UsedType = { kind: 'named'; name: string } | { kind: 'array'; element: UsedType };

function features(list: string[]): { features?: string[] } {
  return list.length > 0 ? { features: [...list] } : {};
}

class Introspector {
  private readonly masks = new Map<string, string>();
  /** Types still to describe, in order of first reference, keyed by their unmasked spelling. */
  private readonly used = new Map<string, UsedType>();
  private readonly entries: unknown[] = [];

  constructor(private readonly schema: Schema) {}

  run(): unknown[] {
    this.use(EMPTY_OBJECT);
    for (const cmd of this.schema.commands.values()) {
      this.entries.push({
        name: cmd.name,
        'meta-type': 'command',
        'arg-type': this.use(cmd.argType ?? EMPTY_OBJECT),
        'ret-type': this.use(cmd.returns ?? EMPTY_OBJECT),
        ...(cmd.allowOob ? { 'allow-oob': true } : {}),
        ...features(cmd.features),
      });
    }
    for (const event of this.schema.events.values()) {
      this.entries.push({
        name: event.name,
        'meta-type': 'event',
        'arg-type': this.use(event.argType ?? EMPTY_OBJECT),
        ...features(event.features),
      });
    }
    // Describing a type may reference new ones; a Map iterates over entries added meanwhile.
    for (const type of this.used.values()) this.entries.push(this.describe(type));
    return this.entries;
  }

  /** Records a reference to `ref` and returns the name introspection shows for it. */
  private use(ref: TypeRef): string {
    return this.useType(this.normalise(ref));
  }

  private useType(type: UsedType): string {
    const key = this.spell(type);
    if (!this.used.has(key)) this.used.set(key, type);
    // As in QEMU, an array is recorded before its element type.
    if (type.kind === 'array') return `[${this.useType(type.element)}]`;
    return this.mask(type.name);
  }

  private normalise(ref: TypeRef): UsedType {
    if (Array.isArray(ref)) return { kind: 'array', element: this.normalise(ref[0]) };
    return { kind: 'named', name: INTEGER_BUILTINS.has(ref) ? 'int' : ref };
  }

  private spell(type: UsedType): string {
    return type.kind === 'named' ? type.name : `[${this.spell(type.element)}]`;
  }

  private mask(name: string): string {
    if (BUILTINS.has(name)) return name;
    let masked = this.masks.get(name);
    if (masked === undefined) {
      masked = String(this.masks.size);
      this.masks.set(name, masked);
    }
    return masked;
  }

  private describe(type: UsedType): unknown {
    if (type.kind === 'array') {
      const element = this.useType(type.element);
      return { name: `[${element}]`, 'meta-type': 'array', 'element-type': element };
    }
    const name = type.name;
    if (name === EMPTY_OBJECT) return { name: this.mask(name), 'meta-type': 'object', members: [] };
    if (BUILTINS.has(name)) return { name, 'meta-type': 'builtin', 'json-type': JSON_TYPES[name] };
    return this.describeDefined(this.schema.type(name));
  }

  private describeDefined(def: TypeDef): unknown {
    const name = this.mask(def.name);
    switch (def.meta) {
      case 'enum':
        return {
          name,
          'meta-type': 'enum',
          members: def.values.map((value) => ({ name: value, ...features(def.valueFeatures[value] ?? []) })),
          values: [...def.values],
          ...features(def.features),
        };
      case 'struct':
        return { name, 'meta-type': 'object', members: this.members(def.members), ...features(def.features) };
      case 'union': {
        const members = this.members(def.members);
        return {
          name,
          'meta-type': 'object',
          members,
          tag: def.discriminator,
          variants: this.variants(def.name, def.members, def.discriminator, def.variants),
          ...features(def.features),
        };
      }
      case 'alternate':
        return {
          name,
          'meta-type': 'alternate',
          members: def.branches.map((branch) => ({ type: this.use(branch.type) })),
          ...features(def.features),
        };
    }
  }

  private members(members: Member[]): unknown[] {
    return members.map((m) => ({
      name: m.name,
      type: this.use(m.type),
      ...(m.optional ? { default: null } : {}),
      ...features(m.features),
    }));
  }

  /** Explicit variants first, then the empty object for each tag value left uncovered. */
  private variants(union: string, members: Member[], tag: string, explicit: Record<string, string>): unknown[] {
    const tagMember = members.find((m) => m.name === tag);
    if (!tagMember || Array.isArray(tagMember.type)) throw new Error(`schema: union ${union} has no tag member ${tag}`);
    const tagType = this.schema.type(tagMember.type);
    if (tagType.meta !== 'enum') throw new Error(`schema: tag ${tag} of union ${union} is not an enum`);
    const cases = Object.entries(explicit).map(([value, type]) => ({ case: value, type: this.use(type) }));
    for (const value of tagType.values) {
      if (!(value in explicit)) cases.push({ case: value, type: this.use(EMPTY_OBJECT) });
    }
    return cases;
  }
}

/** The value of `query-qmp-schema`: a list of SchemaInfo. */
export function introspect(schema: Schema): unknown[] {
  return new Introspector(schema).run();
}

/**
 * The value of `query-commands`. QEMU registers commands in definition
 * order and lists them by prepending, so the last defined comes first.
 */
export function commandList(schema: Schema): Array<{ name: string }> {
  return [...schema.commands.keys()].reverse().map((name) => ({ name }));
}
