/**
 * Typed requests and notifications over a MessagePort, between the main loop
 * and an I/O context. Framing is structured clone; this file does dispatch
 * only. Errors cross the thread as `{ name, message, code, data }` and are
 * rebuilt as `ChannelError`: class identity does not survive, the `code` does.
 */
import type { MessagePort, Transferable, Worker } from 'node:worker_threads';

export interface RequestType<P, R> {
  readonly method: string;
  /** Phantom fields: carry the parameter and result types, never set. */
  readonly _params?: P;
  readonly _result?: R;
}

export interface NotificationType<P> {
  readonly method: string;
  readonly _params?: P;
}

export function requestType<P, R>(method: string): RequestType<P, R> {
  return { method };
}

export function notificationType<P>(method: string): NotificationType<P> {
  return { method };
}

export class ChannelError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

type Endpoint = MessagePort | Worker;

type Wire =
  | { t: 'req'; id: number; m: string; p: unknown }
  | { t: 'res'; id: number; r: unknown }
  | { t: 'err'; id: number; e: { message: string; code: string; data?: unknown } }
  | { t: 'not'; m: string; p: unknown };

/** Lets a handler hand buffers over without copying. */
export class Transfer<T> {
  constructor(
    readonly value: T,
    readonly list: Transferable[],
  ) {}
}

function errorToWire(err: unknown): { message: string; code: string; data?: unknown } {
  if (err instanceof Error) {
    const e = err as Error & { code?: unknown; data?: unknown };
    return { message: e.message, code: typeof e.code === 'string' ? e.code : 'EIO', data: e.data };
  }
  return { message: String(err), code: 'EIO' };
}

export class Channel {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly requestHandlers = new Map<string, (p: unknown) => unknown>();
  private readonly notificationHandlers = new Map<string, (p: unknown) => void>();
  private closed = false;

  constructor(private readonly endpoint: Endpoint) {
    endpoint.on('message', (msg: Wire) => this.receive(msg));
  }

  request<P, R>(type: RequestType<P, R>, params: P, transfer?: Transferable[]): Promise<R> {
    if (this.closed) return Promise.reject(new ChannelError('I/O context is gone', 'ESHUTDOWN'));
    const id = this.nextId++;
    return new Promise<R>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.endpoint.postMessage({ t: 'req', id, m: type.method, p: params } satisfies Wire, transfer);
    });
  }

  notify<P>(type: NotificationType<P>, params: P, transfer?: Transferable[]): void {
    if (this.closed) return;
    this.endpoint.postMessage({ t: 'not', m: type.method, p: params } satisfies Wire, transfer);
  }

  onRequest<P, R>(type: RequestType<P, R>, handler: (params: P) => R | Promise<R> | Transfer<R> | Promise<Transfer<R>>): void {
    this.requestHandlers.set(type.method, handler as (p: unknown) => unknown);
  }

  onNotification<P>(type: NotificationType<P>, handler: (params: P) => void): void {
    this.notificationHandlers.set(type.method, handler as (p: unknown) => void);
  }

  /** Fails every outstanding request; used when the other side exits. */
  close(reason: string): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new ChannelError(reason, 'ESHUTDOWN'));
    this.pending.clear();
  }

  private receive(msg: Wire): void {
    switch (msg.t) {
      case 'res':
      case 'err': {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        if (msg.t === 'res') p.resolve(msg.r);
        else p.reject(new ChannelError(msg.e.message, msg.e.code, msg.e.data));
        return;
      }
      case 'not': {
        this.notificationHandlers.get(msg.m)?.(msg.p);
        return;
      }
      case 'req':
        void this.serve(msg.id, msg.m, msg.p);
        return;
    }
  }

  private async serve(id: number, method: string, params: unknown): Promise<void> {
    const handler = this.requestHandlers.get(method);
    try {
      if (!handler) throw new ChannelError(`no handler for ${method}`, 'ENOSYS');
      const result = await handler(params);
      if (result instanceof Transfer) {
        this.endpoint.postMessage({ t: 'res', id, r: result.value } satisfies Wire, result.list);
      } else {
        this.endpoint.postMessage({ t: 'res', id, r: result } satisfies Wire);
      }
    } catch (err) {
      this.endpoint.postMessage({ t: 'err', id, e: errorToWire(err) } satisfies Wire);
    }
  }
}
