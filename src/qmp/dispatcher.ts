/**
 * Turns one parsed QMP message into one reply: checks the message's shape,
 * the negotiation state, the command and its arguments, then runs the
 * handler. Every check and its wording follow qemu-storage-daemon.
 */
import { log } from '../common/log';
import { ChannelError } from '../common/channel';
import type { CommandHandler } from './command';
import { QmpError, toQmpError } from './errors';
import type { MonitorSession } from './monitor';
import { qdictKeyOrder } from './qmp-json';
import type { Schema } from './schema/schema';
import type { ArgumentValidator } from './schema/validator';
import { runExclusive } from './gs-queue';

export type Reply = { return: unknown; id?: unknown } | { error: { class: string; desc: string }; id?: unknown };

function errorReply(err: QmpError, id: unknown, hasId: boolean): Reply {
  const reply: Reply = { error: { class: err.errorClass, desc: err.desc } };
  if (hasId) reply.id = id;
  return reply;
}

export class Dispatcher {
  private readonly handlers = new Map<string, CommandHandler>();

  constructor(
    private readonly schema: Schema,
    private readonly validator: ArgumentValidator,
    handlers: CommandHandler[],
  ) {
    for (const h of handlers) {
      if (!schema.commands.has(h.name)) throw new Error(`handler ${h.name} has no schema entry`);
      this.handlers.set(h.name, h);
    }
    for (const name of schema.commands.keys()) {
      if (!this.handlers.has(name)) throw new Error(`schema command ${name} has no handler`);
    }
  }

  async dispatch(msg: unknown, session: MonitorSession): Promise<Reply> {
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      return errorReply(QmpError.generic('QMP input must be a JSON object'), undefined, false);
    }
    const obj = msg as Record<string, unknown>;
    const hasId = 'id' in obj;
    const id = obj.id;
    try {
      const { name, oob, args } = this.checkMessage(obj, session);
      const result = await this.execute(name, oob, args, session);
      const reply: Reply = { return: result ?? {} };
      if (hasId) reply.id = id;
      return reply;
    } catch (err) {
      // I/O errors from a context (ChannelError) are answers too; anything else is a bug worth a log line.
      if (!(err instanceof QmpError) && !(err instanceof ChannelError)) log.error({ err }, 'command failed unexpectedly');
      return errorReply(toQmpError(err), id, hasId);
    }
  }

  /** QEMU's qmp_dispatch_check_obj(): member by member, in QDict order. */
  private checkMessage(obj: Record<string, unknown>, session: MonitorSession): { name: string; oob: boolean; args: Record<string, unknown> } {
    for (const key of qdictKeyOrder(Object.keys(obj))) {
      const v = obj[key];
      if (key === 'execute' || (key === 'exec-oob' && session.oobEnabled)) {
        if (typeof v !== 'string') throw QmpError.generic(`QMP input member '${key}' must be a string`);
      } else if (key === 'arguments') {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) throw QmpError.generic(`QMP input member 'arguments' must be an object`);
      } else if (key !== 'id') {
        throw QmpError.generic(`QMP input member '${key}' is unexpected`);
      }
    }
    const exec = obj.execute as string | undefined;
    const execOob = obj['exec-oob'] as string | undefined;
    if (exec !== undefined && execOob !== undefined) throw QmpError.generic(`QMP input member 'execute' clashes with 'exec-oob'`);
    const name = exec ?? execOob;
    if (name === undefined) throw QmpError.generic(`QMP input lacks member 'execute'`);
    return { name, oob: execOob !== undefined, args: (obj.arguments ?? {}) as Record<string, unknown> };
  }

  private async execute(name: string, oob: boolean, rawArgs: Record<string, unknown>, session: MonitorSession): Promise<unknown> {
    // During negotiation only qmp_capabilities exists.
    if (!session.negotiated && name !== 'qmp_capabilities') {
      throw new QmpError('CommandNotFound', `Expecting capabilities negotiation with 'qmp_capabilities'`);
    }
    const handler = this.handlers.get(name);
    const def = this.schema.commands.get(name);
    if (!handler || !def) throw QmpError.commandNotFound(name);
    if (oob && !def.allowOob) throw QmpError.generic(`The command ${name} does not support OOB`);
    const args = this.validator.validate(name, rawArgs);
    return runExclusive(() => handler.run(args, { monitor: session }));
  }
}
