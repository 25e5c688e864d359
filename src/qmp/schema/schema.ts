/**
 * The QMP schema: every command, type, event and enum qbd implements,
 * defined once in `schema/*.json` (QAPI's expression language written as
 * JSON). Argument validation, `query-qmp-schema`, `query-commands` and
 * command-line typing are all derived from it.
 *
 * Definitions:
 *   {"enum": N, "data": [values]}   (a value may be {"name": V, "features": [...]})
 *   {"struct": N, "data": MEMBERS, "base"?: N}
 *   {"union": N, "base": N | MEMBERS, "discriminator": member, "data": {case: struct N}}
 *   {"alternate": N, "data": {branch: TYPE}}
 *   {"command": N, "data"?: N | MEMBERS, "boxed"?: true, "returns"?: TYPE, "allow-oob"?: true, "allow-preconfig"?: true}
 *   {"event": N, "data"?: N | MEMBERS}
 * MEMBERS is {"name": TYPE, "*optional": TYPE, "name": {"type": TYPE, "features": [...]}};
 * TYPE is a builtin (str, int, int8…int64, uint8…uint64, size, number, bool, null, any), a name, or [TYPE].
 * Any definition and member may carry "features": ["deprecated", "unstable", …].
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export type TypeRef = string | [string];

export interface Member {
  name: string;
  type: TypeRef;
  optional: boolean;
  features: string[];
}

interface Base {
  name: string;
  features: string[];
}

export interface EnumDef extends Base {
  meta: 'enum';
  values: string[];
  /** Features of single values (QAPI's {"name": V, "features": [...]} form). */
  valueFeatures: Record<string, string[]>;
}
export interface StructDef extends Base { meta: 'struct'; members: Member[] }
export interface UnionDef extends Base { meta: 'union'; members: Member[]; discriminator: string; variants: Record<string, string> }
export interface AlternateDef extends Base { meta: 'alternate'; branches: Array<{ name: string; type: TypeRef }> }
export interface CommandDef extends Base {
  meta: 'command';
  /** Name of the argument type (a struct, possibly implicit), or undefined for none. */
  argType: string | undefined;
  boxed: boolean;
  returns: TypeRef | undefined;
  allowOob: boolean;
  allowPreconfig: boolean;
}
export interface EventDef extends Base { meta: 'event'; argType: string | undefined }

export type TypeDef = EnumDef | StructDef | UnionDef | AlternateDef;
export type Definition = TypeDef | CommandDef | EventDef;

export const BUILTINS = new Set(['str', 'int', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64', 'size', 'number', 'bool', 'null', 'any']);

export class Schema {
  readonly types = new Map<string, TypeDef>();
  readonly commands = new Map<string, CommandDef>();
  readonly events = new Map<string, EventDef>();

  type(name: string): TypeDef {
    const t = this.types.get(name);
    if (!t) throw new Error(`schema: unknown type ${name}`);
    return t;
  }

  /** All members of a struct or union (base first), as the visitor sees them. */
  members(name: string): Member[] {
    const t = this.type(name);
    if (t.meta !== 'struct' && t.meta !== 'union') throw new Error(`schema: ${name} has no members`);
    return t.members;
  }
}

function parseMembers(data: Record<string, unknown>): Member[] {
  return Object.entries(data).map(([key, spec]) => {
    const optional = key.startsWith('*');
    const name = optional ? key.slice(1) : key;
    if (spec !== null && typeof spec === 'object' && !Array.isArray(spec)) {
      const s = spec as { type: TypeRef; features?: string[] };
      return { name, optional, type: s.type, features: s.features ?? [] };
    }
    return { name, optional, type: spec as TypeRef, features: [] };
  });
}

type Raw = Record<string, any>;

/** Loads every `*.json` file of `dir`; struct bases are flattened into members. */
export function loadSchema(dir: string): Schema {
  const schema = new Schema();
  const raws: Raw[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    raws.push(...(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Raw[]));
  }
  const pendingBases: Array<{ def: StructDef | UnionDef; base: string }> = [];
  const argType = (owner: string, data: unknown): string | undefined => {
    if (data === undefined) return undefined;
    if (typeof data === 'string') return data;
    const name = `q_obj_${owner}-arg`;
    schema.types.set(name, { meta: 'struct', name, features: [], members: parseMembers(data as Record<string, unknown>) });
    return name;
  };
  for (const raw of raws) {
    const features: string[] = raw.features ?? [];
    if ('enum' in raw) {
      const entries = raw.data as Array<string | { name: string; features?: string[] }>;
      const valueFeatures: Record<string, string[]> = {};
      for (const e of entries) if (typeof e !== 'string' && e.features) valueFeatures[e.name] = e.features;
      const values = entries.map((e) => (typeof e === 'string' ? e : e.name));
      schema.types.set(raw.enum, { meta: 'enum', name: raw.enum, features, values, valueFeatures });
    } else if ('struct' in raw) {
      const def: StructDef = { meta: 'struct', name: raw.struct, features, members: parseMembers(raw.data ?? {}) };
      schema.types.set(def.name, def);
      if (raw.base) pendingBases.push({ def, base: raw.base });
    } else if ('union' in raw) {
      const def: UnionDef = { meta: 'union', name: raw.union, features, members: [], discriminator: raw.discriminator, variants: raw.data };
      if (typeof raw.base === 'string') pendingBases.push({ def, base: raw.base });
      else def.members = parseMembers(raw.base);
      schema.types.set(def.name, def);
    } else if ('alternate' in raw) {
      const branches = Object.entries(raw.data as Record<string, TypeRef>).map(([name, type]) => ({ name, type }));
      schema.types.set(raw.alternate, { meta: 'alternate', name: raw.alternate, features, branches });
    } else if ('command' in raw) {
      schema.commands.set(raw.command, {
        meta: 'command',
        name: raw.command,
        features,
        argType: argType(raw.command, raw.data),
        boxed: raw.boxed === true,
        returns: raw.returns,
        allowOob: raw['allow-oob'] === true,
        allowPreconfig: raw['allow-preconfig'] === true,
      });
    } else if ('event' in raw) {
      schema.events.set(raw.event, { meta: 'event', name: raw.event, features, argType: argType(raw.event, raw.data) });
    } else {
      throw new Error(`schema: unknown definition ${JSON.stringify(raw).slice(0, 80)}`);
    }
  }
  // Bases are flattened in dependency order: a base may itself have a base.
  const resolved = new Set<string>();
  const resolve = (def: StructDef | UnionDef, base: string): void => {
    if (resolved.has(def.name)) return;
    const pending = pendingBases.find((p) => p.def.name === base);
    if (pending) resolve(pending.def, pending.base);
    def.members = [...schema.members(base), ...def.members];
    resolved.add(def.name);
  };
  for (const p of pendingBases) resolve(p.def, p.base);
  return schema;
}

/**
 * The schema directory of this installation: `schema/` beside the nearest
 * package.json above this file, which runs from `src/` or from `dist/src/`
 * (the build copies package.json into `dist/`, but not the schema).
 */
function findSchemaDir(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'schema');
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(candidate)) return candidate;
    // Not found: keep the layout of a build, and let loadSchema() report the missing directory.
    if (path.dirname(dir) === dir) return path.join(from, '..', '..', '..', '..', 'schema');
  }
}

export const SCHEMA_DIR = findSchemaDir(__dirname);
