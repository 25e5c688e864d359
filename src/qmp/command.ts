/**
 * How a QMP command handler is declared. A handler exists only with a schema
 * entry of the same name (checked at start-up and by a test).
 */
import type { MonitorSession } from './monitor';

export interface CommandContext {
  /** The monitor the command came from. */
  readonly monitor: MonitorSession;
}

export interface CommandHandler {
  readonly name: string;
  run(args: any, ctx: CommandContext): unknown;
}

export function defineCommand<A = Record<string, never>, R = unknown>(
  name: string,
  run: (args: A, ctx: CommandContext) => R | Promise<R>,
): CommandHandler {
  return { name, run };
}
