/**
 * The server's QAPI schema, as `query-qmp-schema` returns it.
 *
 * QEMU hides type names behind numbers ("29", "[210]"), so nothing can be
 * looked up by a familiar name except commands, events and builtins. Every
 * question therefore starts at a command (or event) and follows `arg-type`,
 * object members, array elements, alternates and union variants to the
 * builtin, enum or object at the end. A union's members depend on its tag's
 * value, which the caller passes in when it knows it.
 */

export interface SchemaMember {
  name: string;
  type: string;
  default?: unknown;
  features?: string[];
}

export interface SchemaEntity {
  name: string;
  'meta-type': 'builtin' | 'enum' | 'array' | 'object' | 'alternate' | 'command' | 'event';
  'json-type'?: string;
  values?: string[];
  members?: Array<SchemaMember | { type: string; name?: string }>;
  'element-type'?: string;
  tag?: string;
  variants?: Array<{ case: string; type: string }>;
  'arg-type'?: string;
  'ret-type'?: string;
  features?: string[];
}

/** What a value of some type looks like, in the terms the shell cares about. */
export type TypeShape =
  | { kind: 'builtin'; name: string; jsonType: string }
  | { kind: 'enum'; values: string[] }
  | { kind: 'array'; element: string }
  | { kind: 'object'; typeName: string }
  | { kind: 'alternate'; choices: string[] }
  | { kind: 'unknown' };

export interface ObjectMember {
  name: string;
  type: string;
  optional: boolean;
}

/** Tag values known so far, by tag member name (from what the user typed). */
export type TagLookup = (tagName: string) => string | undefined;

export class QmpSchema {
  private readonly entities = new Map<string, SchemaEntity>();

  constructor(entities: readonly SchemaEntity[]) {
    for (const entity of entities) this.entities.set(entity.name, entity);
  }

  commandNames(): string[] {
    return this.namesOf('command');
  }

  eventNames(): string[] {
    return this.namesOf('event');
  }

  hasCommand(name: string): boolean {
    return this.entities.get(name)?.['meta-type'] === 'command';
  }

  /** The argument type of a command or event, if it has one. */
  argumentType(name: string): string | undefined {
    const entity = this.entities.get(name);
    if (entity?.['meta-type'] !== 'command' && entity?.['meta-type'] !== 'event') return undefined;
    return entity['arg-type'];
  }

  isEvent(name: string): boolean {
    return this.entities.get(name)?.['meta-type'] === 'event';
  }

  shape(typeName: string): TypeShape {
    const entity = this.entities.get(typeName);
    switch (entity?.['meta-type']) {
      case 'builtin':
        return { kind: 'builtin', name: entity.name, jsonType: entity['json-type'] ?? 'value' };
      case 'enum':
        return { kind: 'enum', values: entity.values ?? [] };
      case 'array':
        return { kind: 'array', element: entity['element-type'] ?? '' };
      case 'object':
        return { kind: 'object', typeName };
      case 'alternate':
        return { kind: 'alternate', choices: (entity.members ?? []).map((member) => member.type) };
      default:
        return { kind: 'unknown' };
    }
  }

  /** The union tag of an object type, with the cases it may take. */
  unionTag(typeName: string): { tag: string; cases: string[] } | undefined {
    const entity = this.entities.get(typeName);
    if (entity?.['meta-type'] !== 'object' || !entity.tag || !entity.variants) return undefined;
    return { tag: entity.tag, cases: entity.variants.map((variant) => variant.case) };
  }

  /**
   * The members of an object type: its own, then those of the variant the tag
   * selects. With the tag unknown, only the common members are listed.
   */
  objectMembers(typeName: string, tagOf: TagLookup = () => undefined): ObjectMember[] {
    const entity = this.entities.get(typeName);
    if (entity?.['meta-type'] !== 'object') return [];
    const members: ObjectMember[] = (entity.members ?? []).map((member) => ({
      name: member.name ?? '',
      type: member.type,
      optional: 'default' in member,
    }));
    if (entity.tag && entity.variants) {
      const tagValue = tagOf(entity.tag);
      const variant = entity.variants.find((candidate) => candidate.case === tagValue);
      if (variant) members.push(...this.objectMembers(variant.type, tagOf));
    }
    return members;
  }

  /** One member's type, looking into every variant when the tag is not known. */
  memberType(typeName: string, member: string, tagOf: TagLookup = () => undefined): string | undefined {
    const known = this.objectMembers(typeName, tagOf).find((candidate) => candidate.name === member);
    if (known) return known.type;
    const entity = this.entities.get(typeName);
    if (!entity?.tag || !entity.variants || tagOf(entity.tag) !== undefined) return undefined;
    for (const variant of entity.variants) {
      const found = this.memberType(variant.type, member, tagOf);
      if (found) return found;
    }
    return undefined;
  }

  /** The object type an alternate (or plain object) offers, for dotted keys. */
  objectChoice(typeName: string): string | undefined {
    const shape = this.shape(typeName);
    if (shape.kind === 'object') return typeName;
    if (shape.kind === 'alternate') return shape.choices.find((choice) => this.shape(choice).kind === 'object');
    return undefined;
  }

  /** A short human name for a type: str, int, enum, [str], object, str | null… */
  label(typeName: string): string {
    const shape = this.shape(typeName);
    switch (shape.kind) {
      case 'builtin':
        return shape.name;
      case 'enum':
        return 'enum';
      case 'array':
        return `[${this.label(shape.element)}]`;
      case 'object':
        return this.unionTag(typeName) ? 'union' : 'object';
      case 'alternate':
        return shape.choices.map((choice) => this.label(choice)).join(' | ');
      case 'unknown':
        return typeName;
    }
  }

  /** The enum values a type admits (also through alternates and booleans). */
  valueChoices(typeName: string): string[] {
    const shape = this.shape(typeName);
    if (shape.kind === 'enum') return shape.values;
    if (shape.kind === 'builtin' && shape.jsonType === 'boolean') return ['true', 'false'];
    if (shape.kind === 'builtin' && shape.jsonType === 'null') return ['null'];
    if (shape.kind === 'alternate') return shape.choices.flatMap((choice) => this.valueChoices(choice));
    return [];
  }

  /** Whether a string is acceptable for the type (str, enum, or an alternate holding one). */
  acceptsString(typeName: string): boolean {
    const shape = this.shape(typeName);
    if (shape.kind === 'builtin') return shape.jsonType === 'string' || shape.jsonType === 'value';
    if (shape.kind === 'enum') return true;
    if (shape.kind === 'alternate') return shape.choices.some((choice) => this.acceptsString(choice));
    return false;
  }

  private namesOf(metaType: SchemaEntity['meta-type']): string[] {
    const names: string[] = [];
    for (const entity of this.entities.values()) if (entity['meta-type'] === metaType) names.push(entity.name);
    return names.sort();
  }
}
