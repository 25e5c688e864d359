/**
 * Checks a value against a schema type the way QEMU's QObject input visitor
 * does, so errors name the same parameter with the same words: members in
 * declaration order (base first, then the union variant), then unexpected
 * members in QDict order. Used when the compiled ajv validator rejects
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

function join(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

function typeError(name: string, expected: string): QmpError {
  return QmpError.generic(`Invalid parameter type for '${name}', expected: ${expected}`);
}

export class Visitor {
  constructor(
    private readonly schema: Schema,
    private readonly keyval?: KeyvalTyping,
  ) {}

  /** Returns the value with command-line strings typed; throws QmpError on the first problem. */
  visit(value: unknown, type: TypeRef, name: string): unknown {
    if (Array.isArray(type)) return this.visitList(value, type[0], name);
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
    if (range) return this.visitInt(value, type, range, name);
    const def = this.schema.type(type);
    switch (def.meta) {
      case 'enum':
        if (typeof value !== 'string') throw typeError(name, 'string');
        if (!def.values.includes(value)) throw QmpError.generic(`Parameter '${name}' does not accept value '${value}'`);
        return value;
      case 'struct':
        return this.visitMembers(value, def.members, [], name);
      case 'union': {
        if (!isObject(value)) throw typeError(name, 'object');
        const out = this.visitMembers(value, def.members, null, name) as Record<string, unknown>;
        const variant = def.variants[String(out[def.discriminator])];
        const variantMembers = variant ? this.schema.members(variant) : [];
        const rest = this.visitMembers(value, variantMembers, def.members, name) as Record<string, unknown>;
        return { ...out, ...rest };
      }
      case 'alternate':
        return this.visitAlternate(value, def.name, def.branches, name);
    }
  }

  /** Visits `members`; `alsoKnown` are members visited elsewhere (a union's base), or null to skip the unexpected check. */
  private visitMembers(value: unknown, members: Member[], alsoKnown: Member[] | null, name: string): unknown {
    if (!isObject(value)) throw typeError(name, 'object');
    const out: Record<string, unknown> = {};
    for (const m of members) {
      const v = value[m.name];
      if (v === undefined) {
        if (!m.optional) throw QmpError.generic(`Parameter '${join(name, m.name)}' is missing`);
        continue;
      }
      out[m.name] = this.visit(v, m.type, join(name, m.name));
    }
    if (alsoKnown !== null) {
      const known = new Set([...members, ...alsoKnown].map((m) => m.name));
      const extra = firstUnexpected(qdictKeyOrder(Object.keys(value)), known);
      if (extra !== undefined) throw QmpError.generic(`Parameter '${join(name, extra)}' is unexpected`);
    }
    return out;
  }

  private visitList(value: unknown, element: string, name: string): unknown {
    if (!Array.isArray(value)) throw typeError(name, 'array');
    // QEMU 7.2 names list elements 'null' in its messages.
    return value.map((v) => this.visit(v, element, 'null'));
  }

  private visitInt(value: unknown, type: string, [min, max]: [bigint, bigint], name: string): unknown {
    let v = value;
    if (this.keyval && typeof v === 'string') v = this.keyval.int(v, name, type);
    if (typeof v === 'number' && !Number.isInteger(v)) throw typeError(name, 'integer');
    if (typeof v !== 'number' && typeof v !== 'bigint') throw typeError(name, 'integer');
    let big = BigInt(v);
    // QEMU reads a negative JSON integer into a uint64 as its two's complement.
    if (type === 'uint64' && big < 0n && big >= -(2n ** 63n)) big += 2n ** 64n;
    if (big < min || big > max) {
      // A value that fits 64 bits but not the member's sized type fails QEMU's visit_type_<type>() range check.
      const sized = type !== 'int' && type !== 'int64' && type !== 'uint64' && type !== 'size';
      if (sized && big >= -(2n ** 63n) && big < 2n ** 64n) throw QmpError.generic(`Parameter '${name}' expects ${type}_t`);
      throw typeError(name, 'integer');
    }
    if (big !== BigInt(v)) return big;
    return typeof v === 'bigint' && big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  /** QEMU picks an alternate's branch by the JSON type of the value. */
  private visitAlternate(value: unknown, typeName: string, branches: Array<{ name: string; type: TypeRef }>, name: string): unknown {
    for (const b of branches) {
      if (this.jsonKindMatches(value, b.type)) return this.visit(value, b.type, name);
    }
    throw typeError(name, typeName);
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
