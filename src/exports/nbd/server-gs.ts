/**
 * The NBD server, GS half: nbd-server-start and nbd-server-stop. The
 * listening socket itself lives in the default I/O context (negotiation
 * runs there); the main loop decides, and forwards connections that must
 * move to the I/O context of an iothread (see docs/exports.md).
 */
import { assertMainLoop } from '../../common/thread-context';
import { log } from '../../common/log';
import { QmpError } from '../../qmp/errors';
import { getDefaultContext } from '../../block/global-state/io-contexts';
import type { IoContext } from '../../block/global-state/io-context';
import * as msg from './messages';
import { authzAllows } from '../../crypto/authz';
import { authzRulesOf, tlsCredsFor } from '../../objects/objects';

/** How long a client may take to negotiate (QEMU later made this `handshake-max-seconds`, default 10). */
export const HANDSHAKE_TIMEOUT_MS = Number(process.env.QBD_NBD_HANDSHAKE_TIMEOUT_MS) || 10_000;

export interface NbdServerConfig {
  address: msg.NbdListenAddress;
  tlsCreds?: string;
  tlsAuthz?: string;
  maxConnections: number;
}

interface RunningServer {
  ctx: IoContext;
  maxConnections: number;
  /** The listener lives in a worker the main loop does not wait for: this keeps the daemon up while it serves. */
  keepAlive: NodeJS.Timeout;
}

let running: RunningServer | undefined;

/** Where a handed-over connection goes: the export's context, found by the registry. */
type HandoffRouter = (state: msg.NegotiatedState) => IoContext | undefined;
let routeHandoff: HandoffRouter = () => undefined;

export function setHandoffRouter(router: HandoffRouter): void {
  routeHandoff = router;
}

export function nbdServerRunning(): boolean {
  assertMainLoop();
  return running !== undefined;
}

export function nbdServerMaxConnections(): number {
  assertMainLoop();
  return running?.maxConnections ?? 0;
}

/** The context that negotiates with clients and must know every export. */
export function nbdServerContext(): IoContext | undefined {
  assertMainLoop();
  return running?.ctx;
}

/** Turns QAPI's SocketAddress (flat, or legacy with `data`) into a listen address. */
export function listenAddress(addr: Record<string, unknown>, legacy: boolean): msg.NbdListenAddress {
  assertMainLoop();
  const data = (legacy ? addr.data : addr) as Record<string, unknown>;
  switch (addr.type) {
    case 'unix':
      if (data.abstract === true) throw QmpError.generic('Abstract unix domain sockets are not supported');
      return { type: 'unix', path: String(data.path) };
    case 'inet': {
      const port = Number(data.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw QmpError.generic(`address resolution failed for ${String(data.host)}:${String(data.port)}: Servname not supported for ai_socktype`);
      const out: msg.NbdListenAddress = { type: 'inet', host: String(data.host), port };
      if (typeof data.ipv4 === 'boolean') out.ipv4 = data.ipv4;
      if (typeof data.ipv6 === 'boolean') out.ipv6 = data.ipv6;
      return out;
    }
    case 'fd':
      // The reference's words: a storage daemon has no monitor file descriptors to look names up in.
      throw QmpError.generic('only QEMU supports file descriptor passing');
    default:
      throw QmpError.generic('vsock sockets are not supported');
  }
}

export async function nbdServerStart(config: NbdServerConfig): Promise<void> {
  assertMainLoop();
  if (running) throw QmpError.generic('NBD server already running');
  // The server keeps a copy: deleting the object later does not stop it, as QEMU's reference does not.
  const creds = config.tlsCreds === undefined ? undefined : tlsCredsFor(config.tlsCreds, 'server');
  const ctx = getDefaultContext();
  ctx.channel.onRequest(msg.nbdHandoff, (p) => handOff(p));
  ctx.channel.onRequest(msg.nbdAuthzCheck, ({ authz, identity }) => authzCheck(authz, identity));
  // Held from here: the worker's answer alone would not keep the main loop waiting for it.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  try {
    const params: msg.NbdListenParams = { address: config.address, maxConnections: config.maxConnections, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS };
    // tls-authz without tls-creds has no effect, and the reference accepts it silently too.
    if (creds) params.tls = config.tlsAuthz === undefined ? { creds } : { creds, authz: config.tlsAuthz };
    await ctx.channel.request(msg.nbdListen, params);
  } catch (err) {
    clearInterval(keepAlive);
    throw QmpError.generic((err as Error).message);
  }
  running = { ctx, maxConnections: config.maxConnections, keepAlive };
}

/** Stops listening and drops clients still negotiating; the caller has deleted the exports first. */
export async function nbdServerStopListening(): Promise<void> {
  assertMainLoop();
  const server = running;
  if (!server) return;
  running = undefined;
  clearInterval(server.keepAlive);
  await server.ctx.channel.request(msg.nbdStopListening, undefined).catch((err: Error) => log.error({ err: err.message }, 'NBD server stop failed'));
}

/** tls-authz names an object looked up at each check, as in QEMU: one added later counts, a missing one denies. */
function authzCheck(authz: string, identity: string): boolean {
  assertMainLoop();
  const rules = authzRulesOf(authz);
  if (!rules) {
    log.warn({ authz }, `No authorization object with id '${authz}'`);
    return false;
  }
  return authzAllows(rules, identity);
}

async function handOff(p: msg.Handoff): Promise<void> {
  assertMainLoop();
  const target = routeHandoff(p.state);
  if (!target) throw Object.assign(new Error(`export '${p.state.exportName}' is gone`), { code: 'ENOENT' });
  // When the client leaves, the negotiating context stops counting it against max-connections.
  target.channel.onNotification(msg.nbdClientGone, ({ ticket }) => running?.ctx.channel.notify(msg.nbdReleaseTicket, { ticket }));
  await target.channel.request(msg.nbdAdopt, p, p.port ? [p.port] : undefined);
}
