/**
 * Gives raw command-line values their JSON types.
 *
 * With the schema, a bare word is typed by what the argument expects: a
 * string stays a string (a node named `1` or `true` is still a name), an int
 * becomes an integer (sizes like `64M` allowed), a bool accepts true/false/
 * on/off. Where the schema has nothing to say (type `any`, unknown keys, or
 * no schema at all) the shell guesses the way qmp-shell does: integers become
 * numbers, true/false become booleans, anything else a string.
 *
 * Quoted words and `{…}`/`[…]` values were made explicit by the user and pass
 * unchanged.
 */

import { integerOrNumber } from './relaxed-json';
import { QmpSchema, TagLookup } from './schema';
import { RawObject, RawValue } from './syntax';

export class TypingError extends Error {
  readonly code = 'SHELL_TYPING';
}

const SIZE_SUFFIXES: Record<string, bigint> = {
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n,
};

/** Reads an integer: decimal, 0x hex, or a size with a binary suffix (k, M, G, T, P, E). */
export function parseInteger(text: string): number | bigint | undefined {
  if (/^[-+]?\d+$/.test(text)) return integerOrNumber(text);
  if (/^[-+]?0x[0-9a-f]+$/i.test(text)) {
    const negative = text.startsWith('-');
    const magnitude = BigInt(text.replace(/^[-+]/, ''));
    return narrow(negative ? -magnitude : magnitude);
  }
  const sized = /^(\d+)([kmgtpe])i?b?$/i.exec(text);
  if (sized) return narrow(BigInt(sized[1]!) * SIZE_SUFFIXES[sized[2]!.toLowerCase()]!);
  return undefined;
}

function narrow(value: bigint): number | bigint {
  const asNumber = Number(value);
  return Number.isSafeInteger(asNumber) ? asNumber : value;
}

export function parseBoolean(text: string): boolean | undefined {
  const lower = text.toLowerCase();
  if (lower === 'true' || lower === 'on' || lower === 'yes') return true;
  if (lower === 'false' || lower === 'off' || lower === 'no') return false;
  return undefined;
}

function parseNumber(text: string): number | undefined {
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) ? Number(text) : undefined;
}

/** qmp-shell's guess for a bare word: an integer, a boolean, or a string. */
export function guessBare(text: string): unknown {
  if (/^[-+]?\d+$/.test(text)) return integerOrNumber(text);
  const lower = text.toLowerCase();
  if (lower === 'true') return true;
  if (lower === 'false') return false;
  return text;
}

/** Typing without schema knowledge, all the way down. */
export function guessValue(raw: RawValue): unknown {
  switch (raw.kind) {
    case 'bare':
      return guessBare(raw.text);
    case 'json':
      return raw.value;
    case 'array':
      return raw.items.map(guessValue);
    case 'object': {
      const result: Record<string, unknown> = {};
      for (const [key, member] of raw.members) result[key] = guessValue(member);
      return result;
    }
  }
}

export class ArgumentTyper {
  constructor(private readonly schema?: QmpSchema) {}

  /** The `arguments` object for a command. */
  commandArguments(command: string, args: RawObject): Record<string, unknown> {
    const argType = this.schema?.argumentType(command);
    return this.typeObject(args, argType, '') as Record<string, unknown>;
  }

  /** The `data` of one transaction action (`type` names the action). */
  transactionData(action: string, args: RawObject): Record<string, unknown> {
    const dataType = this.transactionDataType(action);
    return this.typeObject(args, dataType, '') as Record<string, unknown>;
  }

  /** The type of a transaction action's `data`, found through `transaction`'s schema. */
  transactionDataType(action: string): string | undefined {
    const schema = this.schema;
    const argType = schema?.argumentType('transaction');
    if (!schema || !argType) return undefined;
    const actionsType = schema.memberType(argType, 'actions');
    const arrayShape = actionsType ? schema.shape(actionsType) : undefined;
    if (arrayShape?.kind !== 'array') return undefined;
    return schema.memberType(arrayShape.element, 'data', (tag) => (tag === 'type' ? action : undefined));
  }

  /** Types one value against a type name; undefined means "no knowledge: guess". */
  typeValue(raw: RawValue, typeName: string | undefined, path: string): unknown {
    const schema = this.schema;
    if (!schema || typeName === undefined) return guessValue(raw);
    switch (raw.kind) {
      case 'json':
        return raw.value;
      case 'bare':
        return this.typeBare(raw.text, typeName, path);
      case 'object': {
        const shape = schema.shape(typeName);
        if ((shape.kind === 'builtin' && shape.jsonType === 'value') || shape.kind === 'unknown') return guessValue(raw);
        const objectType = schema.objectChoice(typeName);
        if (objectType === undefined) {
          throw new TypingError(`'${path}' expects ${schema.label(typeName)}, not an object`);
        }
        return this.typeObject(raw, objectType, path);
      }
      case 'array': {
        const shape = schema.shape(typeName);
        const element = shape.kind === 'array' ? shape.element : undefined;
        return raw.items.map((item, index) => this.typeValue(item, element, `${path}[${index}]`));
      }
    }
  }

  private typeObject(raw: RawObject, typeName: string | undefined, path: string): Record<string, unknown> {
    const schema = this.schema;
    const result: Record<string, unknown> = {};
    if (!schema || typeName === undefined) {
      for (const [key, member] of raw.members) result[key] = guessValue(member);
      return result;
    }
    // Tags decide which variant's members apply, so read them as plain strings first.
    const tagOf: TagLookup = (tag) => {
      const value = raw.members.get(tag);
      if (value?.kind === 'bare') return value.text;
      if (value?.kind === 'json' && typeof value.value === 'string') return value.value;
      return undefined;
    };
    for (const [key, member] of raw.members) {
      const memberPath = path === '' ? key : `${path}.${key}`;
      result[key] = this.typeValue(member, schema.memberType(typeName, key, tagOf), memberPath);
    }
    return result;
  }

  private typeBare(text: string, typeName: string, path: string): unknown {
    const schema = this.schema!;
    const shape = schema.shape(typeName);
    switch (shape.kind) {
      case 'enum':
        return text;
      case 'builtin':
        return this.typeBuiltin(text, shape.jsonType, path);
      case 'alternate': {
        const jsonTypes = shape.choices.map((choice) => {
          const choiceShape = schema.shape(choice);
          if (choiceShape.kind === 'builtin') return choiceShape.jsonType;
          if (choiceShape.kind === 'enum') return 'string';
          return choiceShape.kind;
        });
        // Prefer the reading that is most specific for this text.
        if (jsonTypes.includes('null') && text === 'null') return null;
        if (jsonTypes.includes('boolean') && parseBoolean(text) !== undefined) return parseBoolean(text);
        if (jsonTypes.includes('int') && parseInteger(text) !== undefined) return parseInteger(text);
        if (jsonTypes.includes('number') && parseNumber(text) !== undefined) return parseNumber(text);
        if (jsonTypes.includes('string')) return text;
        if (jsonTypes.includes('value')) return guessBare(text);
        throw new TypingError(`'${path}' expects ${schema.label(typeName)}, got '${text}'`);
      }
      case 'array':
      case 'object':
        throw new TypingError(
          `'${path}' expects ${schema.label(typeName)}: use JSON (${shape.kind === 'array' ? '[…]' : '{…}'}) or dotted keys`,
        );
      case 'unknown':
        return guessBare(text);
    }
  }

  private typeBuiltin(text: string, jsonType: string, path: string): unknown {
    switch (jsonType) {
      case 'string':
        return text;
      case 'int': {
        const value = parseInteger(text);
        if (value === undefined) throw new TypingError(`'${path}' expects an integer, got '${text}'`);
        return value;
      }
      case 'number': {
        const value = parseNumber(text) ?? parseInteger(text);
        if (value === undefined) throw new TypingError(`'${path}' expects a number, got '${text}'`);
        return value;
      }
      case 'boolean': {
        const value = parseBoolean(text);
        if (value === undefined) throw new TypingError(`'${path}' expects true or false, got '${text}'`);
        return value;
      }
      case 'null':
        if (text !== 'null') throw new TypingError(`'${path}' expects null, got '${text}'`);
        return null;
      default:
        return guessBare(text);
    }
  }
}
