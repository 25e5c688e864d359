/**
 * qmp-shell's command-line syntax, read into a tree of raw values.
 *
 *   command key=value key.sub=value list=[1, 2] obj={"a": 1} name="with space"
 *
 * Words split on white space outside quotes and outside brackets, so a JSON
 * value may contain spaces (qmp-shell splits them). A dotted key builds nested
 * objects. Values stay raw here: whether `1` is a number or a node name is
 * decided later, from the schema (see typing.ts). What the user made explicit
 * is kept: a quoted value is a string, a `{…}`/`[…]` value is JSON.
 */

import { parseRelaxedJson } from './relaxed-json';

export type RawValue =
  | { kind: 'bare'; text: string }
  | { kind: 'json'; value: unknown }
  | RawObject
  | { kind: 'array'; items: RawValue[] };

export interface RawObject {
  kind: 'object';
  members: Map<string, RawValue>;
}

export class ShellSyntaxError extends Error {
  readonly code = 'SHELL_SYNTAX';
}

export interface Tokenized {
  words: string[];
  /** Brackets still open at the end of the text: the input continues on the next line. */
  openBrackets: number;
  /** The text ends inside a quoted string. */
  openQuote: boolean;
  /** The text ends with white space (the word being typed is empty). */
  endsWithSpace: boolean;
}

export function tokenize(text: string): Tokenized {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | null = null;
  let escaped = false;
  let depth = 0;
  for (const ch of text) {
    if (quote !== null) {
      word += ch;
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === quote) quote = null;
      continue;
    }
    if (/\s/.test(ch) && depth === 0) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    // A bracket opens JSON only where a value starts (or inside JSON already),
    // so a file name like "disk[1].img" is not taken for an open list.
    const valueStarts = depth > 0 || word === '' || word.endsWith('=');
    inWord = true;
    word += ch;
    if (ch === '"' || ch === "'") quote = ch;
    else if ((ch === '{' || ch === '[') && valueStarts) depth++;
    else if ((ch === '}' || ch === ']') && depth > 0) depth--;
  }
  if (inWord) words.push(word);
  return {
    words,
    openBrackets: depth,
    openQuote: quote !== null,
    endsWithSpace: !inWord,
  };
}

/** Reads the text after `=`. */
export function parseValueText(text: string, key: string): RawValue {
  const quoted = unquote(text);
  if (quoted !== undefined) return { kind: 'json', value: quoted };
  if (text.startsWith('{') || text.startsWith('[')) {
    try {
      return { kind: 'json', value: JSON.parse(text) };
    } catch {
      try {
        return { kind: 'json', value: parseRelaxedJson(text) };
      } catch (error) {
        throw new ShellSyntaxError(`Invalid JSON value for '${key}': ${(error as Error).message}`);
      }
    }
  }
  return { kind: 'bare', text };
}

/** The string inside `"…"` (JSON escapes) or `'…'`, if the whole text is one quoted string. */
export function unquote(text: string): string | undefined {
  if (text.length < 2) return undefined;
  const quote = text[0];
  if ((quote !== '"' && quote !== "'") || text[text.length - 1] !== quote) return undefined;
  try {
    const value = parseRelaxedJson(text);
    return typeof value === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

export function emptyRawObject(): RawObject {
  return { kind: 'object', members: new Map() };
}

/** Builds the argument tree from `key=value` words. */
export function parseArguments(words: readonly string[]): RawObject {
  const root = emptyRawObject();
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) throw new ShellSyntaxError(`Expected a key=value pair, got '${word}'`);
    const key = word.slice(0, eq);
    if (key === '') throw new ShellSyntaxError(`Missing key before '=' in '${word}'`);
    setPath(root, key, parseValueText(word.slice(eq + 1), key));
  }
  return root;
}

function setPath(root: RawObject, key: string, value: RawValue): void {
  const path = key.split('.');
  let parent = root;
  for (let i = 0; i < path.length - 1; i++) {
    const name = path[i]!;
    let child = parent.members.get(name);
    if (child === undefined) {
      child = emptyRawObject();
      parent.members.set(name, child);
    } else if (child.kind === 'json' && isPlainObject(child.value)) {
      child = jsonObjectToRaw(child.value);
      parent.members.set(name, child);
    }
    if (child.kind !== 'object') {
      throw new ShellSyntaxError(`Cannot use "${path.slice(0, i + 1).join('.')}" as both leaf and non-leaf key`);
    }
    parent = child;
  }
  const leaf = path[path.length - 1]!;
  const existing = parent.members.get(leaf);
  if (existing !== undefined) {
    if (existing.kind === 'object') throw new ShellSyntaxError(`Cannot use "${key}" as both leaf and non-leaf key`);
    throw new ShellSyntaxError(`Cannot set "${key}" multiple times`);
  }
  parent.members.set(leaf, value);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function jsonObjectToRaw(value: Record<string, unknown>): RawObject {
  const raw = emptyRawObject();
  for (const [key, member] of Object.entries(value)) raw.members.set(key, { kind: 'json', value: member });
  return raw;
}
