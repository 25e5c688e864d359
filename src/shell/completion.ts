/**
 * Tab completion from the schema and the server's live state.
 *
 * First word: command names, the shell's own commands and `transaction(`;
 * inside a transaction, the action names. After it: argument names (`key=`,
 * or `key.` for an object, following dotted paths and union tags already
 * typed), then values: enum members and booleans from the schema, node names
 * and job ids from the server.
 */

import { TRANSACTION_CLOSE, TRANSACTION_OPEN } from './command-builder';
import { QmpSchema, TagLookup } from './schema';
import { RawObject, RawValue, emptyRawObject, parseArguments, tokenize } from './syntax';
import { ArgumentTyper } from './typing';

export interface CompletionSources {
  schema: QmpSchema | undefined;
  /** The shell's own commands (help, jobs…). */
  builtins: readonly string[];
  /** Built-ins whose argument is a command or event name. */
  nameTakingBuiltins: readonly string[];
  /** Built-ins whose arguments are an event's data (wait-event). */
  eventTakingBuiltins: readonly string[];
  inTransaction: boolean;
  nodeNames(): Promise<string[]>;
  jobIds(): Promise<string[]>;
}

export type Completion = [string[], string];

/** Keys that name an existing block node. */
const NODE_KEYS = new Set([
  'node-name', 'node', 'device', 'target', 'base', 'base-node', 'top', 'top-node',
  'overlay', 'file', 'backing', 'image', 'parent', 'child', 'data-file',
]);

export async function completeLine(line: string, sources: CompletionSources): Promise<Completion> {
  if (line.trimStart().startsWith('{')) return [[], line];
  const { words, endsWithSpace } = tokenize(line);
  const current = endsWithSpace ? '' : words.pop() ?? '';
  const schema = sources.schema;

  let previous = words;
  const inTransaction = sources.inTransaction || previous[0] === TRANSACTION_OPEN;
  if (previous[0] === TRANSACTION_OPEN) previous = previous.slice(1);
  else if (previous.length === 0 && !sources.inTransaction) {
    const names = [...(schema?.commandNames() ?? []), ...sources.builtins, TRANSACTION_OPEN];
    return finish(names, current, ' ');
  }

  if (inTransaction) {
    const typer = new ArgumentTyper(schema);
    if (previous.length === 0) {
      const actions = transactionActions(schema);
      return finish(sources.inTransaction ? [...actions, TRANSACTION_CLOSE] : actions, current, ' ');
    }
    return completeArguments(previous[0]!, typer.transactionDataType(previous[0]!), previous.slice(1), current, sources);
  }

  const head = previous[0]!;
  if (sources.nameTakingBuiltins.includes(head)) {
    if (previous.length === 1) {
      const names = [...(schema?.commandNames() ?? []), ...(schema?.eventNames() ?? []), ...sources.builtins];
      return finish(names, current, ' ');
    }
    const target = previous[1]!;
    return completeArguments(target, schema?.argumentType(target), previous.slice(2), current, sources);
  }
  if (sources.eventTakingBuiltins.includes(head)) {
    if (previous.length === 1) return finish(schema?.eventNames() ?? [], current, ' ');
    const event = previous[1]!;
    const completion = await completeArguments(event, schema?.argumentType(event), previous.slice(2), current, sources);
    if (!current.includes('=') && 'timeout='.startsWith(current)) completion[0].push('timeout=');
    return completion;
  }
  return completeArguments(head, schema?.argumentType(head), previous.slice(1), current, sources);
}

function transactionActions(schema: QmpSchema | undefined): string[] {
  const argType = schema?.argumentType('transaction');
  if (!schema || !argType) return [];
  const actionsType = schema.memberType(argType, 'actions');
  const shape = actionsType ? schema.shape(actionsType) : undefined;
  if (shape?.kind !== 'array') return [];
  return schema.unionTag(shape.element)?.cases ?? [];
}

async function completeArguments(
  command: string,
  argType: string | undefined,
  previousWords: readonly string[],
  current: string,
  sources: CompletionSources,
): Promise<Completion> {
  const schema = sources.schema;
  const typed = rawArguments(previousWords);
  const eq = current.indexOf('=');
  if (eq >= 0) {
    const key = current.slice(0, eq);
    const typeName = schema && argType ? typeAtPath(schema, argType, typed, key.split('.')) : undefined;
    const values = await valueCandidates(command, key, typeName, sources);
    return finish(values.map((value) => `${key}=${value}`), current, ' ');
  }
  if (!schema || !argType) return [[], current];
  const path = current.split('.');
  const parentPath = path.slice(0, -1);
  const parentType = parentPath.length === 0 ? argType : typeAtPath(schema, argType, typed, parentPath);
  const objectType = parentType ? schema.objectChoice(parentType) : undefined;
  if (!objectType) return [[], current];
  const parentRaw = rawAtPath(typed, parentPath);
  const prefix = parentPath.length === 0 ? '' : `${parentPath.join('.')}.`;
  const candidates: string[] = [];
  for (const member of schema.objectMembers(objectType, tagsOf(parentRaw))) {
    if (parentRaw?.members.has(member.name)) continue;
    const nested = schema.objectChoice(member.type) !== undefined;
    const scalar = !nested || schema.shape(member.type).kind === 'alternate';
    if (scalar) candidates.push(`${prefix}${member.name}=`);
    if (nested) candidates.push(`${prefix}${member.name}.`);
  }
  return finish(candidates, current, '');
}

async function valueCandidates(
  command: string,
  key: string,
  typeName: string | undefined,
  sources: CompletionSources,
): Promise<string[]> {
  const schema = sources.schema;
  const values = typeName && schema ? [...schema.valueChoices(typeName)] : [];
  const stringOk = !typeName || !schema || schema.acceptsString(typeName);
  const kind = dynamicKind(command, key);
  if (stringOk && kind === 'job') values.push(...(await sources.jobIds()));
  if (stringOk && kind === 'node') values.push(...(await sources.nodeNames()));
  return [...new Set(values)];
}

/** Which live list a key's value comes from, if any. */
export function dynamicKind(command: string, key: string): 'node' | 'job' | undefined {
  const leaf = key.split('.').pop()!;
  if (/^(job-|JOB_)/.test(command) && key === 'id') return 'job';
  if (/^(block-job-|BLOCK_JOB_)/.test(command) && key === 'device') return 'job';
  if (command === 'blockdev-add' && key === 'node-name') return undefined; // a new name
  return NODE_KEYS.has(leaf) ? 'node' : undefined;
}

/** Parses what is typed so far, skipping words that do not parse yet. */
function rawArguments(words: readonly string[]): RawObject {
  const kept: string[] = [];
  for (const word of words) {
    try {
      parseArguments([...kept, word]);
      kept.push(word);
    } catch {
      // an unfinished or wrong word must not stop completion
    }
  }
  return kept.length === 0 ? emptyRawObject() : parseArguments(kept);
}

function rawAtPath(root: RawObject, path: readonly string[]): RawObject | undefined {
  let node: RawValue | undefined = root;
  for (const name of path) {
    if (node?.kind !== 'object') return undefined;
    node = node.members.get(name);
  }
  return node?.kind === 'object' ? node : undefined;
}

function tagsOf(raw: RawObject | undefined): TagLookup {
  return (tag) => {
    const value = raw?.members.get(tag);
    if (value?.kind === 'bare') return value.text;
    if (value?.kind === 'json' && typeof value.value === 'string') return value.value;
    return undefined;
  };
}

function typeAtPath(schema: QmpSchema, rootType: string, typed: RawObject, path: readonly string[]): string | undefined {
  let typeName: string | undefined = rootType;
  for (let i = 0; i < path.length && typeName !== undefined; i++) {
    const objectType = schema.objectChoice(typeName);
    if (!objectType) return undefined;
    typeName = schema.memberType(objectType, path[i]!, tagsOf(rawAtPath(typed, path.slice(0, i))));
  }
  return typeName;
}

/** Keeps the candidates matching what is typed; a single full match gets `suffix`. */
function finish(candidates: readonly string[], current: string, suffix: string): Completion {
  const hits = [...new Set(candidates.filter((candidate) => candidate.startsWith(current)))].sort();
  if (hits.length === 1 && suffix !== '') return [[hits[0]! + suffix], current];
  return [hits, current];
}
