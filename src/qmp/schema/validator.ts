/**
 * Argument validation. Every command's argument type is compiled into an
 * ajv validator once, at start-up: the fast path for valid input. Input it
 * rejects goes to the QEMU-style visitor, which names the first problem the
 * way qemu-storage-daemon does (or accepts what JSON Schema cannot express,
 * such as integers beyond 2^53 read as BigInt).
 */
import Ajv, { type ValidateFunction } from 'ajv';
import { BUILTINS, type Schema, type TypeRef } from './schema';
import { Visitor } from './visitor';
import { QmpError } from '../errors';
import { qdictKeyOrder } from '../qmp-json';
import { firstUnexpected } from './unvisited-order';

type JsonSchema = Record<string, unknown>;

const INT_BOUNDS: Record<string, [number, number]> = {
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 2 ** 32 - 1],
  uint64: [0, Number.MAX_SAFE_INTEGER],
  size: [0, Number.MAX_SAFE_INTEGER],
};

function builtinSchema(name: string): JsonSchema {
  switch (name) {
    case 'str':
      return { type: 'string' };
    case 'bool':
      return { type: 'boolean' };
    case 'number':
      return { type: 'number' };
    case 'null':
      return { type: 'null' };
    case 'any':
      return {};
    default: {
      const bounds = INT_BOUNDS[name];
      return bounds ? { type: 'integer', minimum: bounds[0], maximum: bounds[1] } : { type: 'integer' };
    }
  }
}

/** Translates the schema's types into JSON Schema definitions under `$defs`. */
function toJsonSchema(schema: Schema): JsonSchema {
  const defs: Record<string, JsonSchema> = {};
  const ref = (t: TypeRef): JsonSchema => {
    if (Array.isArray(t)) return { type: 'array', items: ref(t[0]) };
    return BUILTINS.has(t) ? builtinSchema(t) : { $ref: `#/$defs/${t}` };
  };
  const objectOf = (members: { name: string; type: TypeRef; optional: boolean }[], extra: Record<string, JsonSchema> = {}): JsonSchema => ({
    type: 'object',
    properties: { ...Object.fromEntries(members.map((m) => [m.name, ref(m.type)])), ...extra },
    required: members.filter((m) => !m.optional).map((m) => m.name),
    additionalProperties: false,
  });
  for (const def of schema.types.values()) {
    switch (def.meta) {
      case 'enum':
        defs[def.name] = { type: 'string', enum: def.values };
        break;
      case 'struct':
        defs[def.name] = objectOf(def.members);
        break;
      case 'alternate':
        defs[def.name] = { anyOf: def.branches.map((b) => ref(b.type)) };
        break;
      case 'union': {
        const branches = Object.entries(def.variants).map(([tag, variant]) => ({
          if: { properties: { [def.discriminator]: { const: tag } } },
          then: objectOf([...def.members, ...schema.members(variant)]),
        }));
        defs[def.name] = { ...objectOf(def.members), additionalProperties: true, allOf: branches };
        break;
      }
    }
  }
  return { $defs: defs };
}

export class ArgumentValidator {
  private readonly compiled = new Map<string, ValidateFunction>();
  private readonly visitor: Visitor;

  constructor(private readonly schema: Schema) {
    this.visitor = new Visitor(schema);
    const ajv = new Ajv({ strict: false, allErrors: false });
    ajv.addSchema(toJsonSchema(schema), 'qbd');
    for (const cmd of schema.commands.values()) {
      if (cmd.argType) this.compiled.set(cmd.name, ajv.compile({ $ref: `qbd#/$defs/${cmd.argType}` }));
    }
    // Argument types are referenced from $defs, so they must exist there.
    for (const cmd of schema.commands.values()) if (cmd.argType) schema.type(cmd.argType);
  }

  /** Returns the arguments to hand to the handler, or throws the QEMU-worded QmpError. */
  validate(command: string, args: Record<string, unknown>): Record<string, unknown> {
    const cmd = this.schema.commands.get(command);
    if (!cmd) throw new Error(`no schema for ${command}`);
    if (!cmd.argType) {
      const extra = firstUnexpected(qdictKeyOrder(Object.keys(args)), new Set());
      if (extra !== undefined) throw QmpError.generic(`Parameter '${extra}' is unexpected`);
      return args;
    }
    const check = this.compiled.get(command)!;
    if (check(args)) return args;
    return this.visitor.visit(args, cmd.argType, '') as Record<string, unknown>;
  }
}
