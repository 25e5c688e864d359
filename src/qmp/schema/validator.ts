/**
 * Argument validation. Every command's argument type is compiled into an
 * ajv validator once: at build time into a generated module
 * (`build-validators.ts`), or at start-up when that module is absent (tests
 * running from source). It is the fast path for valid input. Input it
 * rejects goes to the QEMU-style visitor, which names the first problem the
 * way qemu-storage-daemon does (or accepts what JSON Schema cannot express,
 * such as integers beyond 2^53 read as BigInt).
 */
import type { ValidateFunction } from 'ajv';
import { BUILTINS, type Schema, type TypeRef } from './schema';
import { TOP, Visitor } from './visitor';
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
export function toJsonSchema(schema: Schema): JsonSchema {
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
    const generated = loadGenerated();
    for (const cmd of schema.commands.values()) {
      if (!cmd.argType) continue;
      const check = generated?.validators[generated.index[cmd.name] ?? ''];
      this.compiled.set(cmd.name, check ?? compileAtStartup(schema).get(cmd.name)!);
    }
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
    return this.visitor.visit(args, cmd.argType, TOP) as Record<string, unknown>;
  }
}

/** The module written at build time: validators by export key, and command name → key. */
export const GENERATED_MODULE = './validators.generated.js';

interface GeneratedValidators {
  index: Record<string, string>;
  validators: Record<string, ValidateFunction>;
}

function loadGenerated(): GeneratedValidators | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(GENERATED_MODULE) as Record<string, unknown>;
    return { index: mod.commandIndex as Record<string, string>, validators: mod as Record<string, ValidateFunction> };
  } catch {
    return undefined;
  }
}

let startupCompiled: Map<string, ValidateFunction> | undefined;

/** Compiles every command's validator with ajv (slower start-up; used without a build). */
function compileAtStartup(schema: Schema): Map<string, ValidateFunction> {
  if (startupCompiled) return startupCompiled;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Ajv = require('ajv').default as typeof import('ajv').default;
  const ajv = new Ajv({ strict: false, allErrors: false });
  ajv.addSchema(toJsonSchema(schema), 'qbd');
  startupCompiled = new Map();
  for (const cmd of schema.commands.values()) {
    if (cmd.argType) startupCompiled.set(cmd.name, ajv.compile({ $ref: `qbd#/$defs/${cmd.argType}` }));
  }
  return startupCompiled;
}
