/**
 * The messages between the main loop's NBD server and the NBD service of
 * I/O contexts. Plain data only: these cross the thread boundary.
 */
import type { MessagePort } from 'node:worker_threads';
import type { SharedDirtyBitmapState } from '../../block/common/shared-dirty-bitmap';
import { notificationType, requestType } from '../../common/channel';
import type { TlsCredentials } from '../../crypto/tls-credentials';

export type NbdListenAddress =
  | { type: 'unix'; path: string }
  | { type: 'inet'; host: string; port: number; ipv4?: boolean; ipv6?: boolean };

export interface NbdListenParams {
  address: NbdListenAddress;
  /** 0: no limit. */
  maxConnections: number;
  /** A client that has not finished negotiating by then is dropped. */
  handshakeTimeoutMs: number;
  /** With credentials, clients must start TLS before anything else; `authz` names the object peers are checked against. */
  tls?: { creds: TlsCredentials; authz?: string };
}

/** What an I/O context knows about an export: enough to negotiate it, and, where its node lives, to serve it. */
export interface NbdExportEntry {
  id: string;
  name: string;
  description: string;
  nodeName: string;
  /** The I/O context the node lives in: only there are requests served. */
  home: string;
  writable: boolean;
  writethrough: boolean;
  allocationDepth: boolean;
  multiConn: boolean;
  /** At the time the export was added; the home context reads the node's live length. */
  size: number;
  minBlock: number;
  maxTransfer: number;
  /** Dirty bitmaps offered as meta contexts, in the order given (ids 2, 3, …). */
  bitmaps: NbdExportBitmap[];
}

/** A dirty bitmap an export offers: its context name and its bits (shared memory). */
export interface NbdExportBitmap {
  context: string;
  bits: SharedDirtyBitmapState;
}

/** What negotiation decided, handed to the context that serves the transmission phase. */
export interface NegotiatedState {
  exportName: string;
  structuredReply: boolean;
  /** Context ids chosen by NBD_OPT_SET_META_CONTEXT, by context name. */
  metaContexts: Record<string, number>;
}

export const nbdListen = requestType<NbdListenParams, void>('nbd.listen');
/** From the negotiating context: may this TLS peer (certificate DN or PSK username) connect? The main loop owns the authz objects. */
export const nbdAuthzCheck = requestType<{ authz: string; identity: string }, boolean>('nbd.authz-check');
/** Closes the listener and every connection still negotiating. */
export const nbdStopListening = requestType<void, void>('nbd.stop-listening');
export const nbdExportAdd = requestType<NbdExportEntry, void>('nbd.export-add');
/** Forgets the export and drops its clients; resolves once their requests in flight have finished. */
export const nbdExportRemove = requestType<{ name: string }, void>('nbd.export-remove');
/** How many clients are in the transmission phase of the export. */
export const nbdExportClients = requestType<{ name: string }, number>('nbd.export-clients');
/**
 * A connection moving from the negotiating context to the export's:
 * a plain socket's descriptor, or for a TLS session a port the negotiating
 * context relays the plaintext over. `ticket` keeps it counted against
 * max-connections.
 */
export interface Handoff {
  fd?: number;
  port?: MessagePort;
  ticket: number;
  state: NegotiatedState;
  leftover: Uint8Array;
}

/** Sent by the negotiating context to the main loop: a connection to move to the export's context. */
export const nbdHandoff = requestType<Handoff, void>('nbd.handoff');
/** From the main loop to the export's context: serve this descriptor. */
export const nbdAdopt = requestType<Handoff, void>('nbd.adopt');
/** From the export's context: a connection it adopted has closed. */
export const nbdClientGone = notificationType<{ ticket: number }>('nbd.client-gone');
/** From the main loop to the negotiating context: stop counting that connection. */
export const nbdReleaseTicket = notificationType<{ ticket: number }>('nbd.release-ticket');
