/**
 * qbd's command line, which is qemu-storage-daemon 7.2's: parsed into the
 * ordered list of actions the daemon applies.
 *
 * The reference reads its arguments twice. A first pass (getopt_long) stops
 * at the first unknown option or missing argument, and at `-h`/`-V`, which
 * print and exit there and then; `--daemonize` and `--pidfile` are applied in
 * that pass too, before anything else. A second pass parses each option's
 * value and applies it, in command-line order, so the first bad value (or
 * stray positional argument) is the one reported. parseCommandLine does both
 * passes but applies nothing: it returns the actions in command-line order.
 *
 * Why not commander: the reference's option handling is glibc getopt_long,
 * whose behaviour scripts rely on and commander does not share: a long option
 * may be shortened to any unique prefix (`--blo`), a required argument is the
 * next word even when it starts with `-` (`--blockdev --object`), `--` ends
 * the options and everything after it is ignored, and the error messages
 * have getopt's wording. Actions must also keep their order across different
 * options. A small table-driven scanner does all of that directly.
 */

import {
  type KeyvalTree,
  type QemuOptsList,
  KeyvalError,
  isJsonArgument,
  parseJsonArgument,
  parseKeyval,
  parseKeyvalWithHelp,
  parseQemuOpts,
  qemuOptsHelp,
} from './keyval';

/** The name qbd's diagnostics start with, where the reference says "qemu-storage-daemon". */
export const PROGRAM_NAME = 'qbd';

/**
 * A command line the daemon must refuse. The daemon prints `stdout` (if any)
 * to standard output, `message` (if any) to standard error, and exits 1.
 * `message` is complete, program name and location included; it is more
 * than one line where the reference adds a hint or warnings came first.
 */
export class CommandLineError extends Error {
  override readonly name = 'CommandLineError';
  readonly stdout: string;

  constructor(message: string, stdout = '') {
    super(message);
    this.stdout = stdout;
  }
}

export type KeyvalOptionName = 'blockdev' | 'chardev' | 'monitor' | 'object' | 'nbd-server' | 'export';

/**
 * One option occurrence. `location` is the argument text as given
 * (`--blockdev driver=file,…`, `--blockdev=…` or `-Tfoo`); the reference
 * prefixes every later error about that option with it (see locatedMessage).
 */
export type CommandLineAction =
  | {
      option: KeyvalOptionName;
      text: string;
      /** A keyval tree of strings, or for JSON (`json: true`) the parsed object. */
      value: KeyvalTree | Record<string, unknown>;
      json: boolean;
      location: string;
      /** `--object help` or `--object TYPE,help`: list object types or TYPE's properties, then exit 0. */
      help?: boolean;
      /** `--chardev` only: deprecation warnings to print, each complete (see locatedMessage). */
      warnings?: string[];
    }
  /** Given more than once, the last path wins (as in the reference). */
  | { option: 'pidfile'; path: string; location: string }
  | { option: 'daemonize'; location: string }
  | { option: 'trace'; text: string; value: KeyvalTree; location: string; warnings?: string[] };

export interface ParsedCommandLine {
  /** In command-line order; empty when `help` or `version` is set. */
  actions: CommandLineAction[];
  /** `-h`/`--help` came before any other reason to stop. */
  help: boolean;
  /** `-V`/`--version` came before any other reason to stop. */
  version: boolean;
}

/** What `--chardev` accepts (QemuOpts keys and types, as the reference's `--chardev socket,help` lists them). */
export const CHARDEV_OPTIONS: QemuOptsList = {
  name: 'chardev',
  impliedKey: 'backend',
  keys: {
    abstract: 'bool', append: 'bool', backend: 'string', chardev: 'string', clipboard: 'bool',
    cols: 'number', debug: 'number', delay: 'bool', fd: 'string', height: 'number', host: 'string',
    ipv4: 'bool', ipv6: 'bool', localaddr: 'string', localport: 'string', logappend: 'bool',
    logfile: 'string', mouse: 'bool', mux: 'bool', name: 'string', nodelay: 'bool', path: 'string',
    port: 'string', reconnect: 'number', rows: 'number', server: 'bool', signal: 'bool', size: 'size',
    telnet: 'bool', tight: 'bool', 'tls-authz': 'string', 'tls-creds': 'string', tn3270: 'bool',
    to: 'number', wait: 'bool', websocket: 'bool', width: 'number',
  },
};

/** What `-T`/`--trace` accepts. */
export const TRACE_OPTIONS: QemuOptsList = {
  name: 'trace',
  impliedKey: 'enable',
  keys: { enable: 'string', events: 'string', file: 'string' },
};

/** How each keyval option reads its value, as in the reference. */
const KEYVAL_OPTIONS: Readonly<Record<Exclude<KeyvalOptionName, 'chardev'>, { impliedKey?: string; help: boolean }>> = {
  blockdev: { impliedKey: 'driver', help: false },
  export: { impliedKey: 'type', help: false },
  monitor: { impliedKey: 'chardev', help: false },
  'nbd-server': { help: false },
  object: { impliedKey: 'qom-type', help: true },
};

type OptionName = KeyvalOptionName | 'daemonize' | 'help' | 'pidfile' | 'trace' | 'version';

interface OptionSpec {
  name: OptionName;
  short?: string;
  takesArgument: boolean;
}

/** In the reference's table order, which its "ambiguous" message lists. */
const OPTIONS: readonly OptionSpec[] = [
  { name: 'blockdev', takesArgument: true },
  { name: 'chardev', takesArgument: true },
  { name: 'daemonize', takesArgument: false },
  { name: 'export', takesArgument: true },
  { name: 'help', short: 'h', takesArgument: false },
  { name: 'monitor', takesArgument: true },
  { name: 'nbd-server', takesArgument: true },
  { name: 'object', takesArgument: true },
  { name: 'pidfile', takesArgument: true },
  { name: 'trace', short: 'T', takesArgument: true },
  { name: 'version', short: 'V', takesArgument: false },
];

type ScannedArgument =
  | { kind: 'option'; spec: OptionSpec; argument: string; location: string }
  | { kind: 'positional'; text: string };

/** `qbd: LOCATION: MESSAGE`, or `qbd: MESSAGE` without a location. */
export function locatedMessage(location: string | undefined, message: string): string {
  return location === undefined ? `${PROGRAM_NAME}: ${message}` : `${PROGRAM_NAME}: ${location}: ${message}`;
}

/**
 * Parses the arguments that follow the program name. Throws CommandLineError
 * with the reference's wording for an unknown option, a missing or unwanted
 * option argument, a malformed value or a positional argument.
 */
export function parseCommandLine(argv: readonly string[]): ParsedCommandLine {
  const scanned = scanArguments(argv);
  if (scanned === 'help' || scanned === 'version') {
    return { actions: [], help: scanned === 'help', version: scanned === 'version' };
  }
  const actions = scanned.map((item) => {
    if (item.kind === 'positional') {
      throw new CommandLineError(locatedMessage(item.text, 'Unexpected argument'));
    }
    return toAction(item.spec.name, item.argument, item.location);
  });
  return { actions, help: false, version: false };
}

/**
 * The first pass: getopt_long's view of argv. Stops at `-h`/`-V`; throws on
 * the first option error, in getopt's words.
 */
function scanArguments(argv: readonly string[]): ScannedArgument[] | 'help' | 'version' {
  const items: ScannedArgument[] = [];
  for (let index = 0; index < argv.length; index++) {
    const word = argv[index] as string;
    if (word === '--') break;
    if (word.startsWith('--')) {
      const body = word.slice(2);
      const equals = body.indexOf('=');
      const spec = findLongOption(word, equals < 0 ? body : body.slice(0, equals));
      if (!spec.takesArgument) {
        if (equals >= 0) throw getoptError(`option '--${spec.name}' doesn't allow an argument`);
        const stop = recordFlag(spec, word, items);
        if (stop !== undefined) return stop;
      } else if (equals >= 0) {
        items.push({ kind: 'option', spec, argument: body.slice(equals + 1), location: word });
      } else if (index + 1 < argv.length) {
        const argument = argv[++index] as string;
        items.push({ kind: 'option', spec, argument, location: `${word} ${argument}` });
      } else {
        throw getoptError(`option '--${spec.name}' requires an argument`);
      }
    } else if (word.startsWith('-') && word.length > 1) {
      // A cluster of short options, like -hV or -Tpattern.
      for (let at = 1; at < word.length; at++) {
        const letter = word[at] as string;
        const spec = OPTIONS.find((option) => option.short === letter);
        if (spec === undefined) throw getoptError(`invalid option -- '${letter}'`);
        if (!spec.takesArgument) {
          const stop = recordFlag(spec, word, items);
          if (stop !== undefined) return stop;
          continue;
        }
        if (at + 1 < word.length) {
          items.push({ kind: 'option', spec, argument: word.slice(at + 1), location: word });
        } else if (index + 1 < argv.length) {
          const argument = argv[++index] as string;
          items.push({ kind: 'option', spec, argument, location: `${word} ${argument}` });
        } else {
          throw getoptError(`option requires an argument -- '${letter}'`);
        }
        break;
      }
    } else {
      items.push({ kind: 'positional', text: word });
    }
  }
  return items;
}

/** An exact name, or else the only option that `name` is a prefix of. */
function findLongOption(word: string, name: string): OptionSpec {
  const exact = OPTIONS.find((option) => option.name === name);
  if (exact !== undefined) return exact;
  const candidates = OPTIONS.filter((option) => option.name.startsWith(name));
  if (candidates.length === 0) throw getoptError(`unrecognized option '${word}'`);
  if (candidates.length > 1) {
    const possibilities = candidates.map((option) => ` '--${option.name}'`).join('');
    throw getoptError(`option '${word}' is ambiguous; possibilities:${possibilities}`);
  }
  return candidates[0] as OptionSpec;
}

/** Handles an option without argument; returns why to stop, if it does. */
function recordFlag(spec: OptionSpec, location: string, items: ScannedArgument[]): 'help' | 'version' | undefined {
  if (spec.name === 'help' || spec.name === 'version') return spec.name;
  items.push({ kind: 'option', spec, argument: '', location });
  return undefined;
}

function getoptError(message: string): CommandLineError {
  return new CommandLineError(locatedMessage(undefined, message));
}

/** The second pass for one option: parses its value. */
function toAction(option: OptionName, text: string, location: string): CommandLineAction {
  try {
    switch (option) {
      case 'daemonize':
        return { option, location };
      case 'pidfile':
        return { option, path: text, location };
      case 'trace':
      case 'chardev':
        return qemuOptsAction(option, text, location);
      case 'help':
      case 'version':
        throw new Error(`--${option} is handled by the first pass`);
      default:
        return keyvalAction(option, text, location);
    }
  } catch (error) {
    if (!(error instanceof KeyvalError)) throw error;
    const warnings = error.warnings.map((warning) => locatedMessage(location, `warning: ${warning}`));
    throw new CommandLineError([...warnings, locatedMessage(location, error.message)].join('\n'));
  }
}

function keyvalAction(option: Exclude<KeyvalOptionName, 'chardev'>, text: string, location: string): CommandLineAction {
  if (isJsonArgument(text)) {
    return { option, text, value: parseJsonArgument(text), json: true, location };
  }
  const { impliedKey, help } = KEYVAL_OPTIONS[option];
  if (!help) {
    return { option, text, value: parseKeyval(text, impliedKey), json: false, location };
  }
  const parsed = parseKeyvalWithHelp(text, impliedKey);
  const action: CommandLineAction = { option, text, value: parsed.tree, json: false, location };
  if (parsed.help) action.help = true;
  return action;
}

/** `--chardev` and `--trace` use QemuOpts: no JSON form, no nesting. */
function qemuOptsAction(option: 'chardev' | 'trace', text: string, location: string): CommandLineAction {
  const list = option === 'chardev' ? CHARDEV_OPTIONS : TRACE_OPTIONS;
  const parsed = parseQemuOpts(text, list);
  const warnings = parsed.warnings.map((warning) => locatedMessage(location, `warning: ${warning}`));
  if (parsed.help) {
    // The reference prints the key list after the warnings so far, and exits 1.
    throw new CommandLineError(warnings.join('\n'), qemuOptsHelp(list));
  }
  const action: CommandLineAction =
    option === 'chardev'
      ? { option, text, value: parsed.values, json: false, location }
      : { option, text, value: parsed.values, location };
  if (warnings.length > 0) action.warnings = warnings;
  return action;
}
