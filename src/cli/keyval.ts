/**
 * The syntaxes of an option argument on qbd's command line, as
 * qemu-storage-daemon reads them:
 *
 * - keyval (`key=value,key2=value2`, dotted keys for nesting, all-digit keys
 *   for lists): `--blockdev`, `--export`, `--monitor`, `--nbd-server`,
 *   `--object`;
 * - the JSON form of the same options, chosen when the argument starts
 *   with `{`, in QEMU's JSON dialect (single-quoted strings allowed,
 *   duplicate keys refused);
 * - the older QemuOpts syntax (flat keys, short-form booleans like
 *   `server` or `nowait`, a fixed list of known keys): `--chardev`, `--trace`.
 *
 * Every parser here only builds a tree of strings (or JSON values). Typing
 * the values against the schema happens later. Error messages are worded
 * like the reference's, without the program name and location prefix.
 */

export type KeyvalTree = { [key: string]: string | KeyvalTree | KeyvalList };
export type KeyvalList = Array<string | KeyvalTree | KeyvalList>;

/** A malformed option argument; `message` is worded like QEMU's. */
export class KeyvalError extends Error {
  override readonly name = 'KeyvalError';
  /** Warnings the reference prints before this error (QemuOpts only). */
  readonly warnings: readonly string[];

  constructor(message: string, warnings: readonly string[] = []) {
    super(message);
    this.warnings = warnings;
  }
}

// ---------------------------------------------------------------------------
// keyval

/** QEMU keeps one key fragment in a 128-byte buffer, terminator included. */
const MAX_FRAGMENT_LENGTH = 127;
/** List indexes are C ints; larger ones are clamped, as QEMU does. */
const INT_MAX = 2147483647;

/** A dict while parsing: insertion-ordered, leaves are strings. */
type Dict = Map<string, string | Dict>;

export interface KeyvalParse {
  tree: KeyvalTree;
  /** True when an element was `help` or `?`. */
  help: boolean;
}

/**
 * Parses keyval text. `impliedKey` names the value of a first element that
 * has no `=` (`--object iothread,id=x` → `qom-type=iothread`). An element
 * `help` or `?` is refused with QEMU's message; use parseKeyvalWithHelp
 * where the option offers help.
 */
export function parseKeyval(text: string, impliedKey?: string): KeyvalTree {
  const parsed = parseKeyvalText(text, impliedKey);
  if (parsed.help) {
    throw new KeyvalError('Help is not available for this option');
  }
  return listify(parsed.root, []) as KeyvalTree;
}

/** Like parseKeyval, but reports a `help` element instead of refusing it. */
export function parseKeyvalWithHelp(text: string, impliedKey?: string): KeyvalParse {
  const parsed = parseKeyvalText(text, impliedKey);
  return { tree: listify(parsed.root, []) as KeyvalTree, help: parsed.help };
}

/** Splits `text` into elements and stores each; lists are made afterwards. */
function parseKeyvalText(text: string, impliedKey: string | undefined): { root: Dict; help: boolean } {
  const root: Dict = new Map();
  let help = false;
  let position = 0;
  let implied = impliedKey;
  while (position < text.length) {
    const element = parseElement(root, text, position, implied);
    if (element.help) help = true;
    position = element.next;
    implied = undefined;
  }
  return { root, help };
}

/** Parses one `key=value` (or implied value, or `help`) element at `start`. */
function parseElement(
  root: Dict,
  text: string,
  start: number,
  impliedKey: string | undefined,
): { next: number; help: boolean } {
  const elementEnd = indexOfAny(text, start, '=,');
  let key = text.slice(start, elementEnd);
  let impliedValue: string | undefined;
  if (key.length > 0 && text[elementEnd] !== '=') {
    if (key === 'help' || key === '?') {
      return { next: skipComma(text, elementEnd), help: true };
    }
    if (impliedKey !== undefined) {
      impliedValue = key;
      key = impliedKey;
    }
  }

  // Walk the dotted fragments, creating the dicts on the way.
  let current = root;
  let cursor = 0;
  let fragment = '';
  for (;;) {
    const length = cursor !== 0 && isDigit(key[cursor]) ? digitRunLength(key, cursor) : Math.max(0, qapiNameLength(key, cursor));
    if (length === 0 || (cursor + length < key.length && key[cursor + length] !== '.')) {
      throw new KeyvalError(`Invalid parameter '${key}'`);
    }
    if (length > MAX_FRAGMENT_LENGTH) {
      const whole = cursor === 0 && length === key.length;
      throw new KeyvalError(`Parameter${whole ? '' : ' fragment'} '${key.slice(cursor, cursor + length)}' is too long`);
    }
    if (cursor !== 0) {
      current = putEntry(current, fragment, undefined, key.slice(0, cursor - 1)) as Dict;
    }
    fragment = key.slice(cursor, cursor + length);
    cursor += length;
    if (key[cursor] !== '.') break;
    cursor++;
  }

  let value: string;
  let next: number;
  if (impliedValue !== undefined) {
    value = impliedValue;
    next = skipComma(text, elementEnd);
  } else {
    if (text[elementEnd] !== '=') {
      throw new KeyvalError(`Expected '=' after parameter '${key}'`);
    }
    ({ value, next } = readValue(text, elementEnd + 1));
  }
  putEntry(current, fragment, value, key);
  return { next, help: false };
}

/**
 * Stores a string (value given) or finds/creates a dict (value undefined)
 * under `fragment`. A later string replaces an earlier one: last one wins.
 */
function putEntry(dict: Dict, fragment: string, value: string | undefined, keySoFar: string): string | Dict {
  const old = dict.get(fragment);
  if (old !== undefined) {
    if ((typeof old === 'string') !== (value !== undefined)) {
      throw new KeyvalError(`Parameters '${keySoFar}.*' used inconsistently`);
    }
    if (value === undefined) return old;
  }
  const entry = value ?? new Map();
  dict.set(fragment, entry);
  return entry;
}

/** Turns dicts whose keys are all indexes into lists, checking contiguity. */
function listify(dict: Dict, path: readonly string[]): KeyvalTree | KeyvalList {
  let hasIndex = false;
  let hasMember = false;
  const converted = new Map<string, string | KeyvalTree | KeyvalList>();
  for (const [key, entry] of dict) {
    if (isDigit(key[0])) hasIndex = true;
    else hasMember = true;
    converted.set(key, typeof entry === 'string' ? entry : listify(entry, [...path, key]));
  }
  const prefix = path.map((part) => `${part}.`).join('');
  if (hasIndex && hasMember) {
    throw new KeyvalError(`Parameters '${prefix}*' used inconsistently`);
  }
  if (!hasIndex) {
    const tree: KeyvalTree = {};
    for (const [key, entry] of converted) tree[key] = entry;
    return tree;
  }
  // `a.0` and `a.00` are the same index; the later one wins.
  const byIndex = new Map<number, string | KeyvalTree | KeyvalList>();
  let maxIndex = -1;
  for (const [key, entry] of converted) {
    const index = Math.min(Number(key), INT_MAX);
    byIndex.set(index, entry);
    maxIndex = Math.max(maxIndex, index);
  }
  const list: KeyvalList = [];
  for (let index = 0; index <= maxIndex; index++) {
    const entry = byIndex.get(index);
    if (entry === undefined) {
      throw new KeyvalError(`Parameter '${prefix}${index}' missing`);
    }
    list.push(entry);
  }
  return list;
}

/** Reads a value up to a lone comma; `,,` stands for one comma. */
function readValue(text: string, start: number): { value: string; next: number } {
  let value = '';
  let position = start;
  while (position < text.length) {
    if (text[position] === ',') {
      position++;
      if (text[position] !== ',') break;
    }
    value += text[position];
    position++;
  }
  return { value, next: position };
}

/**
 * Length of the QAPI name at `start` (letters, digits, `-`, `_`, starting
 * with a letter, optionally after a downstream `__RFQDN_` prefix), or -1.
 */
function qapiNameLength(text: string, start: number): number {
  let position = start;
  if (text[position] === '_') {
    position++;
    if (text[position] !== '_') return -1;
    position++;
    while (position < text.length && (isAlnum(text[position]) || text[position] === '-' || text[position] === '.')) {
      position++;
    }
    if (text[position] !== '_') return -1;
    position++;
  }
  if (!isAlpha(text[position])) return -1;
  while (position < text.length && (isAlnum(text[position]) || text[position] === '-' || text[position] === '_')) {
    position++;
  }
  return position - start;
}

function digitRunLength(text: string, start: number): number {
  let position = start;
  while (isDigit(text[position])) position++;
  return position - start;
}

function indexOfAny(text: string, start: number, characters: string): number {
  let position = start;
  while (position < text.length && !characters.includes(text[position] as string)) position++;
  return position;
}

function skipComma(text: string, position: number): number {
  return text[position] === ',' ? position + 1 : position;
}

function isDigit(character: string | undefined): boolean {
  return character !== undefined && character >= '0' && character <= '9';
}

function isAlpha(character: string | undefined): boolean {
  return character !== undefined && ((character >= 'a' && character <= 'z') || (character >= 'A' && character <= 'Z'));
}

function isAlnum(character: string | undefined): boolean {
  return isAlpha(character) || isDigit(character);
}

// ---------------------------------------------------------------------------
// JSON form
//
// JSON.parse would be simpler, but the reference accepts single-quoted
// strings, refuses duplicate keys and words its errors its own way, and a
// drop-in replacement has to do the same. This follows QEMU's lexer (what is
// a token, and what text a "stray" error quotes), its streamer (the value ends
// when brackets balance; anything after it is a second value) and its parser.

/** True when the reference would read `text` as JSON rather than keyval. */
export function isJsonArgument(text: string): boolean {
  return text.startsWith('{');
}

/** Parses the JSON form of an option argument into a plain object. */
export function parseJsonArgument(text: string): Record<string, unknown> {
  const value = readJsonValues(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KeyvalError('JSON argument must be an object');
  }
  return value as Record<string, unknown>;
}

const MAX_JSON_NESTING = 1024;

type JsonTokenType =
  | 'lcurly' | 'rcurly' | 'lsquare' | 'rsquare' | 'comma' | 'colon'
  | 'string' | 'integer' | 'float' | 'keyword' | 'error';

interface JsonToken {
  type: JsonTokenType;
  text: string;
}

const STRUCTURAL_TOKENS: Readonly<Record<string, JsonTokenType>> = {
  '{': 'lcurly', '}': 'rcurly', '[': 'lsquare', ']': 'rsquare', ',': 'comma', ':': 'colon',
};

/** Reads exactly one JSON value from `text`, as QEMU's qobject_from_json. */
function readJsonValues(text: string): unknown {
  let result: { value: unknown } | undefined;
  const emit = (outcome: { value: unknown } | { error: string }): void => {
    if (result !== undefined) throw new KeyvalError('Expecting at most one JSON value');
    if ('error' in outcome) throw new KeyvalError(outcome.error);
    result = { value: outcome.value };
  };

  let pending: JsonToken[] = [];
  let braces = 0;
  let brackets = 0;
  let position = 0;
  for (;;) {
    const token = lexJsonToken(text, position);
    if (token === undefined) {
      if (pending.length > 0) emit(parseJsonTokens(pending));
      break;
    }
    position = token.end;
    if (token.type === 'error') {
      emit({ error: `JSON parse error, stray '${token.text}'` });
      continue;
    }
    if (token.type === 'lcurly') braces++;
    else if (token.type === 'rcurly') braces--;
    else if (token.type === 'lsquare') brackets++;
    else if (token.type === 'rsquare') brackets--;
    if (braces + brackets > MAX_JSON_NESTING) {
      emit({ error: 'JSON nesting depth limit exceeded' });
    }
    pending.push(token);
    if ((braces > 0 || brackets > 0) && braces >= 0 && brackets >= 0) continue;
    const tokens = pending;
    pending = [];
    braces = 0;
    brackets = 0;
    emit(parseJsonTokens(tokens));
  }
  return result?.value;
}

/**
 * The next token at or after `start`, or undefined at the end. A malformed
 * token is an `error` token whose text runs up to and including the first
 * character that could not continue it (or to the end of the input).
 */
function lexJsonToken(text: string, start: number): (JsonToken & { end: number }) | undefined {
  let position = start;
  while (position < text.length && ' \t\r\n'.includes(text[position] as string)) position++;
  if (position >= text.length) return undefined;
  const first = text[position] as string;
  const tokenStart = position;
  const make = (type: JsonTokenType, end: number) => ({ type, text: text.slice(tokenStart, end), end });

  const structural = STRUCTURAL_TOKENS[first];
  if (structural !== undefined) return make(structural, position + 1);

  if (first === '"' || first === "'") {
    position++;
    for (;;) {
      if (position >= text.length) return make('error', position);
      const character = text[position] as string;
      if (character === first) return make('string', position + 1);
      if (character.charCodeAt(0) < 0x20) return make('error', position + 1);
      if (character === '\\') {
        position++;
        if (position >= text.length) return make('error', position);
        if (text.charCodeAt(position) < 0x20) return make('error', position + 1);
      }
      position++;
    }
  }

  if (first === '-' || isDigit(first)) {
    return lexJsonNumber(text, tokenStart, make);
  }

  if (first >= 'a' && first <= 'z') {
    position++;
    while (position < text.length && (text[position] as string) >= 'a' && (text[position] as string) <= 'z') position++;
    return make('keyword', position);
  }

  return make('error', position + 1);
}

/** QEMU's number states: sign, integer part, fraction, exponent. */
function lexJsonNumber(
  text: string,
  start: number,
  make: (type: JsonTokenType, end: number) => JsonToken & { end: number },
): JsonToken & { end: number } {
  let position = start;
  // Each step needs one character of a given kind, else the token is stray.
  const need = (accept: (character: string) => boolean): boolean => {
    if (position >= text.length) return false;
    const ok = accept(text[position] as string);
    position++;
    return ok;
  };
  const digits = (): void => {
    while (isDigit(text[position])) position++;
  };

  if (text[position] === '-') {
    position++;
    if (!need(isDigit)) return make('error', position);
    position--;
  }
  if (text[position] === '0') {
    position++;
    if (isDigit(text[position])) return make('error', position + 1);
  } else {
    digits();
  }
  let type: JsonTokenType = 'integer';
  if (text[position] === '.') {
    position++;
    if (!need(isDigit)) return make('error', position);
    digits();
    type = 'float';
  }
  if (text[position] === 'e' || text[position] === 'E') {
    position++;
    if (text[position] === '+' || text[position] === '-') {
      position++;
    } else if (!isDigit(text[position])) {
      return make('error', Math.min(position + 1, text.length));
    }
    if (!need(isDigit)) return make('error', position);
    digits();
    type = 'float';
  }
  return make(type, position);
}

class JsonSyntaxError extends Error {}

/** Parses one complete value's tokens (QEMU's json_parser_parse). */
function parseJsonTokens(tokens: readonly JsonToken[]): { value: unknown } | { error: string } {
  let index = 0;
  const fail = (message: string): never => {
    throw new JsonSyntaxError(`JSON parse error, ${message}`);
  };
  const peek = (): JsonToken | undefined => tokens[index];
  const pop = (): JsonToken => tokens[index++] ?? fail('premature EOI');

  const parseValue = (): unknown => {
    const token = peek() ?? fail('premature EOI');
    switch (token.type) {
      case 'lcurly':
        return parseObject();
      case 'lsquare':
        return parseArray();
      case 'string':
        index++;
        return decodeJsonString(token.text, fail);
      case 'integer':
        index++;
        return Number(token.text) + 0; // `-0` is the integer 0
      case 'float':
        index++;
        return Number(token.text);
      case 'keyword':
        index++;
        if (token.text === 'true') return true;
        if (token.text === 'false') return false;
        if (token.text === 'null') return null;
        return fail(`invalid keyword '${token.text}'`);
      default:
        return fail('expecting value');
    }
  };

  const parseObject = (): Record<string, unknown> => {
    pop();
    const object: Record<string, unknown> = {};
    if ((peek() ?? fail('premature EOI')).type === 'rcurly') {
      pop();
      return object;
    }
    for (;;) {
      if (peek() === undefined) fail('premature EOI');
      const key = parseValue();
      if (typeof key !== 'string') fail('key is not a string in object');
      if (pop().type !== 'colon') fail('missing : in object pair');
      const value = parseValue();
      if (Object.hasOwn(object, key as string)) fail('duplicate key');
      // defineProperty, so that a key "__proto__" is an ordinary member.
      Object.defineProperty(object, key as string, { value, enumerable: true, writable: true, configurable: true });
      const separator = pop();
      if (separator.type === 'rcurly') return object;
      if (separator.type !== 'comma') fail('expected separator in dict');
    }
  };

  const parseArray = (): unknown[] => {
    pop();
    const array: unknown[] = [];
    if ((peek() ?? fail('premature EOI')).type === 'rsquare') {
      pop();
      return array;
    }
    for (;;) {
      array.push(parseValue());
      const separator = pop();
      if (separator.type === 'rsquare') return array;
      if (separator.type !== 'comma') fail('expected separator in list');
    }
  };

  try {
    return { value: parseValue() };
  } catch (error) {
    if (error instanceof JsonSyntaxError) return { error: error.message };
    throw error;
  }
}

/** Decodes a quoted string token (either quote), checking its escapes. */
function decodeJsonString(token: string, fail: (message: string) => never): string {
  let result = '';
  let position = 1;
  // The token ends with its closing quote; escapes never run past it.
  while (position < token.length - 1) {
    const character = token[position] as string;
    if (character !== '\\') {
      result += character;
      position++;
      continue;
    }
    const escapeStart = position;
    const escape = token[position + 1];
    position += 2;
    const simple = escape === undefined ? undefined : SIMPLE_ESCAPES[escape];
    if (simple !== undefined) {
      result += simple;
      continue;
    }
    if (escape !== 'u') fail('invalid escape sequence in string');
    let codePoint = hex4(token, position);
    position += 4;
    if (codePoint >= 0xd800 && codePoint <= 0xdbff && token[position] === '\\' && token[position + 1] === 'u') {
      const trailing = hex4(token, position + 2);
      if (trailing >= 0xdc00 && trailing <= 0xdfff) {
        codePoint = 0x10000 + ((codePoint & 0x3ff) << 10) + (trailing & 0x3ff);
        position += 6;
      } else {
        codePoint = -1;
      }
    }
    if (codePoint < 0 || (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
      fail(`${token.slice(escapeStart, position)} is not a valid Unicode character`);
    }
    result += String.fromCodePoint(codePoint);
  }
  return result;
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"', "'": "'", '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t',
};

/** The four hex digits at `start` as a number, or -1. */
function hex4(text: string, start: number): number {
  const digits = text.slice(start, start + 4);
  return /^[0-9a-fA-F]{4}$/.test(digits) ? parseInt(digits, 16) : -1;
}

// ---------------------------------------------------------------------------
// QemuOpts

export type QemuOptType = 'string' | 'bool' | 'number' | 'size';

/** A QemuOpts option list: what `--chardev` and `--trace` accept. */
export interface QemuOptsList {
  /** Used in the help caption: "<name> options:". */
  name: string;
  /** The key of a first element given without `=`. */
  impliedKey: string;
  /** The keys accepted besides `id`, with the type each value must parse as. */
  keys: Readonly<Record<string, QemuOptType>>;
}

export interface QemuOptsParse {
  /** Key to value (strings; the last of repeated keys wins). `id` is the first `id=`. */
  values: KeyvalTree;
  /** True when a flag element was `help` or `?`: the reference prints the key list and exits 1. */
  help: boolean;
  /** Deprecation warnings for short-form booleans, in order, without location prefix. */
  warnings: string[];
}

/** Parses a QemuOpts argument, validating keys and value types like the reference. */
export function parseQemuOpts(text: string, list: QemuOptsList): QemuOptsParse {
  const values: KeyvalTree = {};
  const warnings: string[] = [];

  // The id is looked up first, without the implied key, and checked before anything else.
  for (let position = 0; position < text.length; ) {
    const element = readQemuOptsElement(text, position, undefined);
    position = element.next;
    if (element.name === 'id') {
      if (!isWellFormedId(element.value)) {
        throw new KeyvalError(
          "Parameter 'id' expects an identifier\n" +
            "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.",
        );
      }
      values['id'] = element.value;
      break;
    }
  }

  let implied: string | undefined = list.impliedKey;
  for (let position = 0; position < text.length; ) {
    const element = readQemuOptsElement(text, position, implied);
    position = element.next;
    implied = undefined;
    if (element.help) return { values, help: true, warnings };
    if (element.warning !== undefined) warnings.push(element.warning);
    if (element.name === 'id') continue;
    const type = Object.hasOwn(list.keys, element.name) ? list.keys[element.name] : undefined;
    if (type === undefined) {
      throw new KeyvalError(`Invalid parameter '${element.name}'`, warnings);
    }
    const problem = checkQemuOptValue(element.name, element.value, type);
    if (problem !== undefined) throw new KeyvalError(problem, warnings);
    values[element.name] = element.value;
  }
  return { values, help: false, warnings };
}

/** The reference's listing for `<option> …,help`: a caption and the keys, sorted. */
export function qemuOptsHelp(list: QemuOptsList): string {
  const typeNames: Record<QemuOptType, string> = {
    string: '<str>', bool: '<bool (on/off)>', number: '<num>', size: '<size>',
  };
  const lines = Object.keys(list.keys)
    .sort()
    .map((key) => `  ${key}=${typeNames[list.keys[key] as QemuOptType]}\n`);
  return `${list.name} options:\n${lines.join('')}`;
}

interface QemuOptsElement {
  name: string;
  value: string;
  help: boolean;
  warning?: string;
  next: number;
}

function readQemuOptsElement(text: string, start: number, impliedKey: string | undefined): QemuOptsElement {
  const nameEnd = indexOfAny(text, start, '=,');
  let name: string;
  let value: string;
  let help = false;
  let warning: string | undefined;
  let end: number;
  if (text[nameEnd] === '=') {
    name = text.slice(start, nameEnd);
    ({ value, next: end } = readQemuOptsValue(text, nameEnd + 1));
  } else if (impliedKey !== undefined) {
    name = impliedKey;
    ({ value, next: end } = readQemuOptsValue(text, start));
  } else {
    // A bare flag: `name` means name=on, `noname` means name=off.
    const flag = text.slice(start, nameEnd);
    end = nameEnd;
    const negated = flag.startsWith('no');
    name = negated ? flag.slice(2) : flag;
    value = negated ? 'off' : 'on';
    help = !negated && (name === 'help' || name === '?');
    if (!help) {
      const advice = name === 'delay' ? `nodelay=${negated ? 'on' : 'off'}` : `${name}=${value}`;
      warning = `short-form boolean option '${flag}' deprecated\nPlease use ${advice} instead`;
    }
  }
  const element: QemuOptsElement = { name, value, help, next: skipComma(text, end) };
  if (warning !== undefined) element.warning = warning;
  return element;
}

/** Like readValue, but stops at (not after) the ending comma. */
function readQemuOptsValue(text: string, start: number): { value: string; next: number } {
  let value = '';
  let position = start;
  while (position < text.length) {
    if (text[position] === ',') {
      if (text[position + 1] !== ',') break;
      position++;
    }
    value += text[position];
    position++;
  }
  return { value, next: position };
}

function isWellFormedId(id: string): boolean {
  return /^[A-Za-z][A-Za-z0-9._-]*$/.test(id);
}

const UINT64_MAX = (1n << 64n) - 1n;

/** The reference's QemuOpts value check for one key, or undefined when fine. */
function checkQemuOptValue(name: string, value: string, type: QemuOptType): string | undefined {
  switch (type) {
    case 'string':
      return undefined;
    case 'bool':
      return ['on', 'yes', 'true', 'y', 'off', 'no', 'false', 'n'].includes(value)
        ? undefined
        : `Parameter '${name}' expects 'on' or 'off'`;
    case 'number': {
      // strtoull with base 0: optional sign, then decimal, octal or hex.
      const match = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(value);
      if (match === null) return `Parameter '${name}' expects a number`;
      const magnitude = BigInt(/^0[0-7]+$/.test(match[2] as string) ? `0o${(match[2] as string).slice(1)}` : (match[2] as string));
      if (magnitude > UINT64_MAX) return `Value '${value}' is too large for parameter '${name}'`;
      return undefined;
    }
    case 'size':
      return checkSize(name, value);
  }
}

const SIZE_SHIFTS: Readonly<Record<string, bigint>> = {
  b: 0n, k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n,
};

/** qemu_strtosz's rules: decimal with optional fraction and suffix, or bare hex. */
function checkSize(name: string, value: string): string | undefined {
  const invalid =
    `Parameter '${name}' expects a non-negative number below 2^64\n` +
    'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n' +
    'and exabytes, respectively.';
  const outOfRange = `Value '${value}' is out of range for parameter '${name}'`;
  // Hex with a suffix is still accepted (the reference only warns it is deprecated).
  const hex = /^\s*\+?0[xX]([0-9a-fA-F]+)([bBkKmMgGtTpPeE]?)$/.exec(value);
  if (hex !== null) {
    const shift = SIZE_SHIFTS[(hex[2] as string).toLowerCase() || 'b'] as bigint;
    return BigInt(`0x${hex[1] as string}`) << shift > UINT64_MAX ? outOfRange : undefined;
  }
  const decimal = /^\s*\+?([0-9]+)(?:\.([0-9]*))?([bBkKmMgGtTpPeE]?)$/.exec(value);
  if (decimal === null) return invalid;
  const whole = BigInt(decimal[1] as string);
  const fraction = decimal[2] ?? '';
  const shift = SIZE_SHIFTS[(decimal[3] as string).toLowerCase() || 'b'] as bigint;
  if (shift === 0n && /[1-9]/.test(fraction)) return invalid;
  // The fraction adds less than one unit; the whole part decides the range.
  return whole << shift > UINT64_MAX ? outOfRange : undefined;
}
