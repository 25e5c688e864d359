/**
 * Checks a value against a schema type the way QEMU's QObject input visitor
 * does, so errors name the same parameter with the same words: members in
 * declaration order (base first, then the union variant), then unexpected
 * members in QDict order. Like QEMU, most errors name the member by its
 * full path (`rules[0].policy`, or `rules.0.policy` in key=value syntax),
 * but a rejected enum value, an alternate of the wrong kind and an integer
 * out of its sized type's range name only the member itself (`null` for a
 * list element). Used when the compiled ajv validator rejects
 * input, to say why in QEMU's terms; and for command-line values, where it
 * also types the strings of key=value syntax.
 */
import { QmpError } from '../errors';
import { qdictKeyOrder } from '../qmp-json';
import { firstUnexpected } from './unvisited-order';
import type { Member, Schema, TypeRef } from './schema';

const INT_RANGES: Record<string, [bigint, bigint]> = {
  int: [-(2n ** 63n), 2n ** 63n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  int16: [-(2n ** 15n), 2n ** 15n - 1n],
  int8: [-128n, 127n],
  uint64: [0n, 2n ** 64n - 1n],
  size: [0n, 2n ** 64n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  uint16: [0n, 2n ** 16n - 1n],
  uint8: [0n, 255n],
};

/** How command-line strings become typed values; absent for JSON input. */
export interface KeyvalTyping {
  int(text: string, name: string, type: string): number | bigint;
  bool(text: string, name: string): boolean;
  number(text: string, name: string): number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Where a value sits: its full path for most errors, and its own name for the few QEMU words with it alone. */
export interface Place {
  path: string;
  name: string;
}

/** The place of the arguments themselves. */
export const TOP: Place = { path: '', name: '' };

function member(at: Place, name: string): Place {
  return { path: at.path ? `${at.path}.${name}` : name, name };
}

const UNSIGNED = new Set(['uint8', 'uint16', 'uint32', 'uint64', 'size']);

function typeError(name: string, expected: string): QmpError {
  return QmpError.generic(`Invalid parameter type for '${name}', expected: ${expected}`);
}

export class Visitor {
  constructor(
    private readonly schema: Schema,
    private readonly keyval?: KeyvalTyping,
  ) {}

  /** Returns the value with command-line strings typed; throws QmpError on the first problem. */
  visit(value: unknown, type: TypeRef, at: Place): unknown {
    const name = at.path;
    if (Array.isArray(type)) return this.visitList(value, type[0], at);
    switch (type) {
      case 'any':
        return value;
      case 'str':
        if (typeof value !== 'string') throw typeError(name, 'string');
        return value;
      case 'bool':
        if (this.keyval && typeof value === 'string') return this.keyval.bool(value, name);
        if (typeof value !== 'boolean') throw typeError(name, 'boolean');
        return value;
      case 'number':
        if (this.keyval && typeof value === 'string') return this.keyval.number(value, name);
        if (typeof value !== 'number' && typeof value !== 'bigint') throw typeError(name, 'number');
        return value;
      case 'null':
        if (value !== null) throw typeError(name, 'null');
        return value;
    }
    const range = INT_RANGES[type];
    if (range) return this.visitInt(value, type, range, at);
    const def = this.schema.type(type);
    switch (def.meta) {
      case 'enum':
        if (typeof value !== 'string') throw typeError(name, 'string');
        if (!def.values.includes(value)) throw QmpError.generic(`Parameter '${at.name}' does not accept value '${value}'`);
        return value;
      case 'struct':
        return this.visitMembers(value, def.members, [], at);
      case 'union': {
        if (!isObject(value)) throw typeError(name, 'object');
        const out = this.visitMembers(value, def.members, null, at) as Record<string, unknown>;
        const variant = def.variants[String(out[def.discriminator])];
        const variantMembers = variant ? this.schema.members(variant) : [];
        const rest = this.visitMembers(value, variantMembers, def.members, at) as Record<string, unknown>;
        return { ...out, ...rest };
      }
      case 'alternate':
        return this.visitAlternate(value, def.name, def.branches, at);
    }
  }

  /** Visits `members`; `alsoKnown` are members visited elsewhere (a union's base), or null to skip the unexpected check. */
  private visitMembers(value: unknown, members: Member[], alsoKnown: Member[] | null, at: Place): unknown {
    if (!isObject(value)) throw typeError(at.path, 'object');
    const out: Record<string, unknown> = {};
    for (const m of members) {
      const v = value[m.name];
      if (v === undefined) {
        if (!m.optional) throw QmpError.generic(`Parameter '${member(at, m.name).path}' is missing`);
        continue;
      }
      out[m.name] = this.visit(v, m.type, member(at, m.name));
    }
    if (alsoKnown !== null) {
      const known = new Set([...members, ...alsoKnown].map((m) => m.name));
      const extra = firstUnexpected(qdictKeyOrder(Object.keys(value)), known);
      if (extra !== undefined) throw QmpError.generic(`Parameter '${member(at, extra).path}' is unexpected`);
    }
    return out;
  }

  private visitList(value: unknown, element: string, at: Place): unknown {
    if (!Array.isArray(value)) throw typeError(at.path, 'array');
    // An element has no name of its own: QEMU calls it 'null', and indexes it in the path.
    const index = (i: number): string => (this.keyval ? `${at.path}.${i}` : `${at.path}[${i}]`);
    return value.map((v, i) => this.visit(v, element, { path: index(i), name: 'null' }));
  }

  private visitInt(value: unknown, type: string, [min, max]: [bigint, bigint], at: Place): unknown {
    const name = at.path;
    let v = value;
    if (this.keyval && typeof v === 'string') v = this.keyval.int(v, name, type);
    // QEMU reads every unsigned type through its uint64 visitor, which words a non-integer its own way.
    const notInteger = (): QmpError => (UNSIGNED.has(type) ? QmpError.generic(`Parameter '${name}' expects uint64`) : typeError(name, 'integer'));
    if (typeof v === 'number' && !Number.isInteger(v)) throw notInteger();
    if (typeof v !== 'number' && typeof v !== 'bigint') throw notInteger();
    let big = BigInt(v);
    // QEMU reads a negative JSON integer into a uint64 as its two's complement.
    if (type === 'uint64' && big < 0n && big >= -(2n ** 63n)) big += 2n ** 64n;
    if (big < min || big > max) {
      // A value that fits 64 bits but not the member's sized type fails QEMU's visit_type_<type>() range check.
      const sized = type !== 'int' && type !== 'int64' && type !== 'uint64' && type !== 'size';
      if (sized && big >= -(2n ** 63n) && big < 2n ** 64n) throw QmpError.generic(`Parameter '${at.name}' expects ${type}_t`);
      throw notInteger();
    }
    if (big !== BigInt(v)) return big;
    return typeof v === 'bigint' && big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** QEMU picks an alternate's branch by the JSON type of the value. */
  private visitAlternate(value: unknown, typeName: string, branches: Array<{ name: string; type: TypeRef }>, at: Place): unknown {
    for (const b of branches) {
      if (this.jsonKindMatches(value, b.type)) return this.visit(value, b.type, at);
    }
    throw typeError(at.name, typeName);
  }

  private jsonKindMatches(value: unknown, type: TypeRef): boolean {
    if (Array.isArray(type)) return Array.isArray(value);
    if (type === 'null') return value === null;
    if (type === 'str') return typeof value === 'string';
    if (type === 'bool') return typeof value === 'boolean';
    if (type === 'number') return typeof value === 'number';
    if (INT_RANGES[type]) return typeof value === 'number' || typeof value === 'bigint';
    if (type === 'any') return true;
    const def = this.schema.type(type);
    if (def.meta === 'enum') return typeof value === 'string';
    return isObject(value);
  }
}
