/**
 * Makes a chardev from a ChardevBackend (QAPI's form, which chardev-add
 * takes and --chardev options are turned into). Options qbd does not
 * implement are refused with a message naming them.
 */
import type { Chardev } from './chardev';
import { FileChardev } from './file-chardev';
import { NullChardev } from './null-chardev';
import { isRingbufSize, RINGBUF_DEFAULT_SIZE, RingbufChardev } from './ringbuf-chardev';
import { SocketChardev, type SocketChardevOptions } from './socket-chardev';
import { tlsCredsFor } from '../../objects/objects';
import { StdioChardev } from './stdio-chardev';

export interface ChardevCommon {
  logfile?: string;
  logappend?: boolean;
}

export interface ChardevSocketOptions extends ChardevCommon {
  addr: { type: 'inet'; data: { host: string; port: string } } | { type: 'unix'; data: { path: string; abstract?: boolean } } | { type: 'vsock' | 'fd'; data: unknown };
  'tls-creds'?: string;
  'tls-authz'?: string;
  server?: boolean;
  wait?: boolean;
  nodelay?: boolean;
  telnet?: boolean;
  tn3270?: boolean;
  websocket?: boolean;
  reconnect?: number;
}

export type ChardevBackend =
  | { type: 'file'; data: ChardevCommon & { in?: string; out: string; append?: boolean } }
  | { type: 'socket'; data: ChardevSocketOptions }
  | { type: 'null'; data: ChardevCommon }
  | { type: 'stdio'; data: ChardevCommon & { signal?: boolean } }
  | { type: 'ringbuf' | 'memory'; data: ChardevCommon & { size?: number | bigint } };

/** Socket options that qbd does not implement, when they ask for something. */
const UNSUPPORTED_SOCKET_OPTIONS = ['telnet', 'tn3270'] as const;

function socketChardev(id: string, opts: ChardevSocketOptions, defaults: { server: boolean; wait: boolean }): SocketChardev {
  const server = opts.server ?? defaults.server;
  // The reference's checks, in its order.
  if (opts.addr.type === 'unix' && opts['tls-creds'] !== undefined) throw new Error(`'tls_creds' option is incompatible with 'unix' address type`);
  if (opts['tls-authz'] !== undefined && opts['tls-creds'] === undefined) throw new Error(`'tls_authz' option requires 'tls_creds' option`);
  if (server && opts.reconnect !== undefined) throw new Error(`'reconnect' option is incompatible with socket in server listen mode`);
  if (!server) {
    if (opts.websocket) throw new Error('Websocket client is not implemented');
    if (opts.wait !== undefined) throw new Error(`'wait' option is incompatible with socket in client connect mode`);
  }
  for (const key of UNSUPPORTED_SOCKET_OPTIONS) {
    const v = opts[key];
    if (v === true) throw new Error(`socket option '${key}' is not supported`);
  }
  const common: Omit<SocketChardevOptions, 'path' | 'host' | 'port'> = { id, server, wait: server && (opts.wait ?? defaults.wait), websocket: opts.websocket ?? false };
  if (opts.reconnect !== undefined) common.reconnect = Number(opts.reconnect);
  if (opts['tls-creds'] !== undefined) {
    if (common.websocket) throw new Error(`TLS on a WebSocket chardev is not supported`);
    common.tls = { creds: tlsCredsFor(opts['tls-creds'], server ? 'server' : 'client') };
    if (opts['tls-authz'] !== undefined) common.tls.authz = opts['tls-authz'];
  }
  switch (opts.addr.type) {
    case 'unix':
      if (opts.addr.data.abstract) throw new Error(`abstract UNIX sockets are not supported`);
      return new SocketChardev({ ...common, path: opts.addr.data.path });
    case 'inet':
      return new SocketChardev({ ...common, host: opts.addr.data.host, port: opts.addr.data.port });
    default:
      throw new Error(`socket address type '${opts.addr.type}' is not supported`);
  }
}

/**
 * A chardev for `backend`, not yet opened. QMP and the command line differ
 * in a socket's defaults: chardev-add makes a server that does not wait,
 * --chardev a client (which qbd refuses) that waits.
 */
export function createChardev(id: string, backend: ChardevBackend, socketDefaults: { server: boolean; wait: boolean }): Chardev {
  switch (backend.type) {
    case 'socket':
      return socketChardev(id, backend.data, socketDefaults);
    case 'stdio':
      return new StdioChardev(id);
    case 'null':
      return new NullChardev(id);
    case 'file': {
      const opts: ConstructorParameters<typeof FileChardev>[1] = { out: backend.data.out, append: backend.data.append ?? false };
      if (backend.data.in !== undefined) opts.in = backend.data.in;
      return new FileChardev(id, opts);
    }
    case 'ringbuf':
    case 'memory': {
      const size = BigInt(backend.data.size ?? RINGBUF_DEFAULT_SIZE);
      if (!isRingbufSize(size)) throw new Error('size of ringbuf chardev must be power of two');
      // A negative size that passes QEMU's test (-2^63) overflows its buffer there; here it holds nothing.
      return new RingbufChardev(id, backend.type, size > 0n ? Number(size) : 0);
    }
  }
}

/** The backends qbd implements, in the order query-chardev-backends lists them (the reference's). */
export const CHARDEV_BACKENDS = ['null', 'ringbuf', 'stdio', 'socket', 'file', 'memory'] as const;

/** `--chardev help`: the backends, in the reference's listing order (the reverse of query-chardev-backends). */
export function chardevBackendsHelp(): string {
  return `Available chardev backend types: \n${[...CHARDEV_BACKENDS].reverse().map((name) => `  ${name}\n`).join('')}`;
}
