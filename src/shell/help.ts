/**
 * `help` and `help COMMAND [tag=value…]`, written from the schema.
 *
 * For a command (or event) it lists each argument with its type and whether
 * it is optional; nested objects are shown with dotted names, the way they
 * are typed. A union lists its cases; naming the case (`help blockdev-add
 * driver=file`) shows that variant's arguments too.
 */

import { QmpSchema, TagLookup } from './schema';
import { RawObject, RawValue, parseArguments } from './syntax';

export interface BuiltinHelp {
  name: string;
  usage: string;
  summary: string;
}

const MAX_DEPTH = 3;
const MAX_ENUM_SHOWN = 12;

export function formatCommandList(schema: QmpSchema | undefined, builtins: readonly BuiltinHelp[], width: number): string {
  const lines: string[] = [];
  if (schema) {
    lines.push('Commands of the server:');
    lines.push(...columns(schema.commandNames(), width));
    lines.push('');
  } else {
    lines.push('The server schema is not available; commands are sent as typed.', '');
  }
  lines.push('Commands of the shell:');
  const usageWidth = Math.max(...builtins.map((builtin) => builtin.usage.length));
  for (const builtin of builtins) lines.push(`  ${builtin.usage.padEnd(usageWidth)}  ${builtin.summary}`);
  lines.push(
    '',
    'Syntax: COMMAND key=value key.sub=value list=[1, 2] obj={"k": "v"} name="quoted string"',
    '        {"execute": …} sends raw JSON; transaction( … ) groups actions; Tab completes.',
  );
  return lines.join('\n');
}

export function formatCommandHelp(schema: QmpSchema, name: string, given: RawObject): string | undefined {
  const isEvent = schema.isEvent(name);
  if (!isEvent && !schema.hasCommand(name)) return undefined;
  const argType = schema.argumentType(name);
  const rows: Row[] = [];
  if (argType) collectRows(schema, argType, given, '', 0, rows);
  const header = `${name}${isEvent ? ' (event)' : ''}`;
  if (rows.length === 0) return `${header}: no ${isEvent ? 'data' : 'arguments'}`;
  const lines = [`${header} ${isEvent ? 'data' : 'arguments'}:`];
  const nameWidth = Math.min(32, Math.max(...rows.map((row) => (row.name ?? '').length)));
  const typeWidth = Math.min(24, Math.max(...rows.map((row) => (row.type ?? '').length)));
  for (const row of rows) {
    if (row.note !== undefined) {
      lines.push(`  ${row.note}`);
      continue;
    }
    const optional = row.optional ? 'optional' : '';
    const detail = row.detail ? `  ${row.detail}` : '';
    lines.push(`  ${row.name!.padEnd(nameWidth)}  ${row.type!.padEnd(typeWidth)}  ${optional.padEnd(8)}${detail}`.trimEnd());
  }
  return lines.join('\n');
}

export function formatBuiltinHelp(builtin: BuiltinHelp): string {
  return `${builtin.usage}\n  ${builtin.summary}`;
}

interface Row {
  name?: string;
  type?: string;
  optional?: boolean;
  detail?: string;
  note?: string;
}

function collectRows(
  schema: QmpSchema,
  typeName: string,
  given: RawObject | undefined,
  prefix: string,
  depth: number,
  rows: Row[],
): void {
  const tagOf: TagLookup = (tag) => {
    const value: RawValue | undefined = given?.members.get(tag);
    if (value?.kind === 'bare') return value.text;
    if (value?.kind === 'json' && typeof value.value === 'string') return value.value;
    return undefined;
  };
  const tag = schema.unionTag(typeName)?.tag;
  for (const member of schema.objectMembers(typeName, tagOf)) {
    const name = `${prefix}${member.name}`;
    const shape = schema.shape(member.type);
    const detail = shape.kind === 'enum' ? enumText(shape.values, member.name === tag) : undefined;
    rows.push({ name, type: schema.label(member.type), optional: member.optional, detail });
    // Plain nested objects are spelled out; an alternate (often "a node name or
    // a new node") only when the user started typing its members.
    const nestedGiven = given?.members.get(member.name);
    const nested = nestedGiven?.kind === 'object' ? schema.objectChoice(member.type) : shape.kind === 'object' ? member.type : undefined;
    if (nested && depth < MAX_DEPTH) {
      collectRows(schema, nested, nestedGiven?.kind === 'object' ? nestedGiven : undefined, `${name}.`, depth + 1, rows);
    }
  }
  const union = unionWithoutCase(schema, typeName, tagOf);
  if (union) {
    rows.push({ note: `(${prefix}${union.tag} selects more arguments: add ${prefix}${union.tag}=VALUE to see them)` });
  }
}

function unionWithoutCase(schema: QmpSchema, typeName: string, tagOf: TagLookup): { tag: string; cases: string[] } | undefined {
  const union = schema.unionTag(typeName);
  if (!union) return undefined;
  const chosen = tagOf(union.tag);
  return chosen !== undefined && union.cases.includes(chosen) ? undefined : union;
}

function enumText(values: readonly string[], all: boolean): string {
  if (all) return `(${values.join(', ')})`;
  const shown = values.slice(0, MAX_ENUM_SHOWN).join(', ');
  return values.length > MAX_ENUM_SHOWN ? `(${shown}, … ${values.length - MAX_ENUM_SHOWN} more)` : `(${shown})`;
}

function columns(names: readonly string[], width: number): string[] {
  const cell = Math.max(...names.map((name) => name.length)) + 2;
  const perLine = Math.max(1, Math.floor((width - 2) / cell));
  const lines: string[] = [];
  for (let i = 0; i < names.length; i += perLine) {
    lines.push(`  ${names.slice(i, i + perLine).map((name) => name.padEnd(cell)).join('').trimEnd()}`);
  }
  return lines;
}

/** The text for `help WORDS…`. */
export function helpFor(
  schema: QmpSchema | undefined,
  builtins: readonly BuiltinHelp[],
  words: readonly string[],
  columns: number,
): string {
  const [name, ...rest] = words;
  if (name === undefined) return formatCommandList(schema, builtins, columns);
  const builtin = builtins.find((candidate) => candidate.name === name);
  if (builtin) return formatBuiltinHelp(builtin);
  if (!schema) return `No schema available: cannot describe '${name}'.`;
  let given: RawObject;
  try {
    given = parseArguments(rest);
  } catch (error) {
    return (error as Error).message;
  }
  return formatCommandHelp(schema, name, given) ?? `Unknown command or event '${name}'.`;
}
