/**
 * State of an nbd client node, shared by its GS and I/O halves, and the
 * messages the GS half sends to the I/O context that holds the connection.
 * Plain data only: it crosses the thread boundary.
 */
import { requestType } from '../../../common/channel';
import { MAX_PAYLOAD } from '../../../exports/nbd/protocol';
import type { TlsCredentials } from '../../../crypto/tls-credentials';

/** Where the server listens: the variants of SocketAddress a client can reach from Node. */
export type NbdServerAddress = { type: 'unix'; path: string } | { type: 'inet'; host: string; port: string; family?: 4 | 6; keepAlive?: boolean };

/** What a connection needs for TLS: the credentials, and the name the server's certificate must carry. */
export interface NbdClientTls {
  creds: TlsCredentials;
  /** tls-hostname, else the host of an inet address; undefined for a unix socket without tls-hostname. */
  hostname?: string;
}

/** What a connection needs to negotiate, again and again across reconnects. */
export interface NbdConnectOptions {
  server: NbdServerAddress;
  /** Export name; the empty string is the server's default export. */
  exportName: string;
  /** The meta context block status is read from: base:allocation, or x-dirty-bitmap's. */
  metaContext: string;
  /** Whether the meta context was asked for explicitly (x-dirty-bitmap): then it must exist. */
  metaContextRequired: boolean;
  /** Set with tls-creds: STARTTLS before anything else, again on every reconnect. */
  tls?: NbdClientTls;
}

/** What negotiation learnt about the export. */
export interface NbdExportInfo {
  size: number;
  /** Transmission flags (TFLAG bits). */
  flags: number;
  /** Block size constraints; 0 when the server sent none. */
  minBlock: number;
  preferredBlock: number;
  maxBlock: number;
  structuredReplies: boolean;
  /** Id of the negotiated meta context, undefined when block status is not available. */
  metaContextId?: number;
}

export interface NbdClientState {
  connect: NbdConnectOptions;
  info: NbdExportInfo;
  /** Seconds requests wait for a reconnect before failing. */
  reconnectDelay: number;
  /** Names the connection opened during `open`, parked in the I/O context until the node attaches. */
  token: number;
}

/** Connects and negotiates in the I/O context, keeping the connection under `token`. */
export const nbdClientConnect = requestType<{ token: number; options: NbdConnectOptions; openTimeout: number }, NbdExportInfo>('nbd-client.connect');
/** Drops a parked connection that no node attached (blockdev-add failed after open). */
export const nbdClientRelease = requestType<{ token: number }, void>('nbd-client.release');

/** The request alignment QEMU's client uses: the server's minimum, else 1 where sub-sector access is known to work, else 512. */
export function requestAlignmentOf(info: NbdExportInfo): number {
  if (info.minBlock > 0) return info.minBlock;
  return info.size % 512 !== 0 || info.metaContextId !== undefined ? 1 : 512;
}

/** The largest request sent: the server's maximum, capped at the conventional 32 MiB. */
export function maxTransferOf(info: NbdExportInfo): number {
  return info.maxBlock > 0 ? Math.min(info.maxBlock, MAX_PAYLOAD) : MAX_PAYLOAD;
}
