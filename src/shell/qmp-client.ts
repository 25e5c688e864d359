/**
 * A QMP client: greeting, capability negotiation, commands matched to their
 * replies by id, and asynchronous events.
 *
 * Every command goes out with an id of the client's own. A message the user
 * typed with an id of its own gets that id back on its reply, so the
 * substitution is invisible. A reply without an id (the server could not
 * parse the request) belongs to the oldest command still waiting, since the
 * server answers in order.
 */

import { EventEmitter } from 'node:events';
import { ServerAddress } from './address';
import { formatJson } from './json-text';
import { MessageTransport, openTransport } from './transport';

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

export interface QmpGreeting {
  QMP: { version: QmpVersion; capabilities: string[] };
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpErrorBody {
  class: string;
  desc: string;
}

export type QmpReply = { return: unknown; id?: unknown } | { error: QmpErrorBody; id?: unknown };

export type QmpMessage = Record<string, unknown>;

/** Runs one command and resolves with its reply (what helpers need of a client). */
export type Execute = (command: string, args?: Record<string, unknown>) => Promise<QmpReply>;

export function isErrorReply(reply: QmpReply): reply is { error: QmpErrorBody; id?: unknown } {
  return 'error' in reply;
}

export function versionText(greeting: QmpGreeting): string {
  const { qemu, package: pkg } = greeting.QMP.version;
  const base = `${qemu.major}.${qemu.minor}.${qemu.micro}`;
  return pkg ? `${base} (${pkg})` : base;
}

/** A command failed at the protocol level (not a QMP error reply). */
export class QmpConnectionError extends Error {
  readonly code = 'QMP_CONNECTION';
}

interface PendingCommand {
  ownId: string;
  userId: unknown;
  hadUserId: boolean;
  resolve(reply: QmpReply): void;
  reject(error: Error): void;
}

const GREETING_TIMEOUT_MS = 10_000;
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [Error | undefined];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private transport: MessageTransport | undefined;
  private readonly pending: PendingCommand[] = [];
  private nextId = 1;
  private closed = false;
  private greetingWaiter: ((message: QmpMessage) => void) | undefined;
  greeting: QmpGreeting | undefined;

  /** Connects and waits for the greeting. */
  static async connect(address: ServerAddress): Promise<QmpClient> {
    const client = new QmpClient();
    let timer: NodeJS.Timeout | undefined;
    const greeting = new Promise<QmpMessage>((resolve, reject) => {
      timer = setTimeout(() => reject(new QmpConnectionError('no QMP greeting from the server')), GREETING_TIMEOUT_MS);
      client.greetingWaiter = resolve;
      client.once('close', (error) => {
        reject(error ?? new QmpConnectionError('server closed the connection before its greeting'));
      });
    });
    greeting.catch(() => undefined); // awaited below, unless opening fails first
    let message: QmpMessage;
    try {
      client.transport = await openTransport(address, {
        message: (text) => client.receive(text),
        closed: (error) => client.shutDown(error),
      });
      message = await greeting;
    } catch (error) {
      client.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (typeof message.QMP !== 'object' || message.QMP === null) {
      client.close();
      throw new QmpConnectionError(`expected a QMP greeting, got ${formatJson(message)}`);
    }
    client.greeting = message as unknown as QmpGreeting;
    return client;
  }

  /** Leaves capabilities negotiation mode. */
  async negotiate(): Promise<void> {
    const reply = await this.executeWithin(HANDSHAKE_TIMEOUT_MS, 'qmp_capabilities');
    if (isErrorReply(reply)) throw new QmpConnectionError(`qmp_capabilities failed: ${reply.error.desc}`);
  }

  /** Like execute, for commands that must answer promptly (start-up queries). */
  async executeWithin(timeoutMs: number, command: string, args?: Record<string, unknown>): Promise<QmpReply> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpConnectionError(`no reply to ${command} within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      return await Promise.race([this.execute(command, args), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<QmpReply> {
    return this.send(args === undefined ? { execute: command } : { execute: command, arguments: args });
  }

  /** Sends a complete message (`execute`, `arguments`, maybe `id`) and waits for its reply. */
  send(message: QmpMessage): Promise<QmpReply> {
    if (this.closed || !this.transport) return Promise.reject(new QmpConnectionError('not connected'));
    const ownId = `qbd-shell-${this.nextId++}`;
    const transport = this.transport;
    return new Promise<QmpReply>((resolve, reject) => {
      this.pending.push({ ownId, userId: message.id, hadUserId: 'id' in message, resolve, reject });
      transport.send(formatJson({ ...message, id: ownId }, { tight: true }));
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.transport?.close();
    this.shutDown();
  }

  private receive(text: string): void {
    let message: QmpMessage;
    try {
      message = JSON.parse(text) as QmpMessage;
    } catch {
      this.transport?.close();
      this.shutDown(new QmpConnectionError(`server sent invalid JSON: ${text.slice(0, 200)}`));
      return;
    }
    if (this.greetingWaiter) {
      const waiter = this.greetingWaiter;
      this.greetingWaiter = undefined;
      waiter(message);
      return;
    }
    if (typeof message.event === 'string') {
      this.emit('event', message as unknown as QmpEvent);
      return;
    }
    if ('return' in message || 'error' in message) this.settle(message as QmpReply);
  }

  private settle(reply: QmpReply): void {
    const index = reply.id === undefined ? 0 : this.pending.findIndex((entry) => entry.ownId === reply.id);
    if (index < 0 || index >= this.pending.length) return; // a reply nobody waits for
    const [entry] = this.pending.splice(index, 1);
    const restored: Record<string, unknown> = { ...reply };
    delete restored.id;
    if (entry!.hadUserId) restored.id = entry!.userId;
    entry!.resolve(restored as QmpReply);
  }

  private shutDown(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const entry of this.pending.splice(0)) {
      entry.reject(error ?? new QmpConnectionError('connection closed'));
    }
    this.emit('close', error);
  }
}
