/**
 * The shell's own commands. They are recognised before anything is sent, so
 * they take precedence over a server command of the same name.
 */

import { BuiltinHelp } from './help';

export const BUILTINS: readonly BuiltinHelp[] = [
  { name: 'help', usage: 'help [COMMAND [tag=value…]]', summary: 'list commands, or show the arguments of one (from the schema)' },
  { name: 'jobs', usage: 'jobs', summary: 'live view of the jobs: progress, offset/length, speed, status (any key stops)' },
  { name: 'watch-jobs', usage: 'watch-jobs', summary: 'same as jobs' },
  {
    name: 'wait-event',
    usage: 'wait-event EVENT [key=value…] [timeout=SECONDS]',
    summary: 'wait for an event whose data matches (default timeout 30 s)',
  },
];

export const BUILTIN_NAMES: readonly string[] = BUILTINS.map((builtin) => builtin.name);

/** Built-ins whose first argument is a command or event name (for completion). */
export const NAME_TAKING_BUILTINS: readonly string[] = ['help'];

/** Built-ins whose arguments are an event name and its data (for completion). */
export const EVENT_TAKING_BUILTINS: readonly string[] = ['wait-event'];
