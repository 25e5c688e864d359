/**
 * nbd, GS half: checks the options, has the default I/O context connect and
 * negotiate (the socket lives there, beside the node's requests), and
 * derives the node's limits and read-only state from what the server said.
 * Also the node's file name as QEMU shows it (`nbd+unix:///exp?socket=…`,
 * `nbd://host:port/exp`, or `json:{…}` when no URI says it all).
 */
import { assertMainLoop } from '../../../common/thread-context';
import { QmpError } from '../../../qmp/errors';
import { toQmpJson } from '../../../qmp/qmp-json';
import { PERM_ALL } from '../../common/permissions';
import type { GsDriver } from '../../global-state/driver-gs';
import { getDefaultContext } from '../../global-state/io-contexts';
import { TFLAG, META_BASE_ALLOCATION } from '../../../exports/nbd/protocol';
import { maxTransferOf, nbdClientConnect, nbdClientRelease, requestAlignmentOf, type NbdClientState, type NbdConnectOptions, type NbdServerAddress } from './common';
import { tlsCredsFor } from '../../../objects/objects';

type SocketAddressOption = { type: string; [key: string]: unknown };

let nextToken = 1;

function serverAddress(server: SocketAddressOption): NbdServerAddress {
  switch (server.type) {
    case 'unix':
      return { type: 'unix', path: String(server.path) };
    case 'inet': {
      const family = server.ipv4 === true && server.ipv6 !== true ? 4 : server.ipv6 === true && server.ipv4 !== true ? 6 : undefined;
      return { type: 'inet', host: String(server.host), port: String(server.port), ...(family ? { family } : {}), ...(server['keep-alive'] === true ? { keepAlive: true } : {}) };
    }
    case 'fd':
      throw QmpError.generic('only QEMU supports file descriptor passing');
    case 'vsock':
      // Node has no AF_VSOCK sockets.
      throw QmpError.generic(`Failed to connect to '${String(server.cid)}:${String(server.port)}': Address family not supported by protocol`);
    default:
      throw QmpError.generic(`Invalid parameter type for 'server.type', expected: SocketAddressType`);
  }
}

function seconds(options: Record<string, unknown>, key: string): number {
  const v = Number(options[key] ?? 0);
  if (!Number.isSafeInteger(v) || v < 0) throw QmpError.generic(`Parameter '${key}' expects a non-negative number below 2^64`);
  return v;
}

/** QEMU's pseudo file name of an nbd node, when the address can be written as a URI. */
function uriFilename(options: Record<string, unknown>): string | undefined {
  const server = options.server as SocketAddressOption;
  const exp = options.export as string | undefined;
  if (server.type === 'unix') return exp !== undefined ? `nbd+unix:///${exp}?socket=${String(server.path)}` : `nbd+unix://?socket=${String(server.path)}`;
  if (server.type === 'inet' && server.ipv4 === undefined && server.ipv6 === undefined && server.to === undefined) {
    const base = `nbd://${String(server.host)}:${String(server.port)}`;
    return exp !== undefined ? `${base}/${exp}` : base;
  }
  return undefined;
}

/** QEMU flattens the options of a `json:` file name with dotted keys. */
function flatten(value: Record<string, unknown>, prefix: string, out: Record<string, unknown>): Record<string, unknown> {
  for (const [k, v] of Object.entries(value)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, `${prefix}${k}.`, out);
    else if (v !== undefined) out[`${prefix}${k}`] = v;
  }
  return out;
}

/** Options that define what an nbd node reads: QEMU's strong runtime options of the driver. */
const STRONG = ['server', 'export', 'tls-creds'];

export const nbdGs: GsDriver<NbdClientState> = {
  descriptor: { name: 'nbd', kind: 'protocol' },
  strongOptions: STRONG,

  async open(ctx, options) {
    assertMainLoop();
    const server = serverAddress(options.server as SocketAddressOption);
    const connect: NbdConnectOptions = {
      server,
      exportName: (options.export as string | undefined) ?? '',
      metaContext: (options['x-dirty-bitmap'] as string | undefined) ?? META_BASE_ALLOCATION,
      metaContextRequired: options['x-dirty-bitmap'] !== undefined,
    };
    if (options['tls-creds'] !== undefined) {
      const creds = tlsCredsFor(String(options['tls-creds']), 'client');
      // As QEMU: the certificate is checked against tls-hostname, else the host dialled; a unix socket has none.
      const hostname = (options['tls-hostname'] as string | undefined) ?? (server.type === 'inet' ? server.host : undefined);
      connect.tls = { creds, ...(hostname !== undefined ? { hostname } : {}) };
    }
    const reconnectDelay = seconds(options, 'reconnect-delay');
    const openTimeout = seconds(options, 'open-timeout');

    const ioCtx = getDefaultContext();
    const token = nextToken++;
    let info;
    try {
      info = await ioCtx.channel.request(nbdClientConnect, { token, options: connect, openTimeout });
    } catch (err) {
      throw QmpError.generic((err as Error).message);
    }
    let readOnly = ctx.readOnly;
    if (info.flags & TFLAG.READ_ONLY && !readOnly) {
      if (options['auto-read-only'] !== true) {
        await ioCtx.channel.request(nbdClientRelease, { token });
        throw QmpError.generic('Could not open image: Permission denied');
      }
      readOnly = true;
    }
    return {
      state: { connect, info, reconnectDelay, token },
      // QEMU counts lengths in whole sectors; the tail past the export reads as zeros.
      length: Math.ceil(info.size / 512) * 512,
      requestAlignment: requestAlignmentOf(info),
      maxTransfer: maxTransferOf(info),
      readOnly,
    };
  },

  async close(node) {
    assertMainLoop();
    // The I/O half took the connection when it attached; if it never did, the connection is still parked.
    await getDefaultContext()
      .channel.request(nbdClientRelease, { token: (node.state as NbdClientState).token })
      .catch(() => undefined);
  },

  childPerms: () => ({ perm: 0, shared: PERM_ALL }),

  // The server does not say how much it stores: queries show no actual-size, as QEMU's.
  allocatedSize: () => undefined,

  plainFilename(node) {
    const uri = uriFilename(node.options);
    if (uri !== undefined) return uri;
    const strong: Record<string, unknown> = { driver: 'nbd' };
    for (const k of STRONG) if (node.options[k] !== undefined) strong[k] = node.options[k];
    return `json:${toQmpJson(flatten(strong, '', {}))}`;
  },
};
