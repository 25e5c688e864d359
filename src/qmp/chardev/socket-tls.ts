/**
 * TLS on a socket chardev (`tls-creds=`, `tls-authz=`): the handshake runs
 * on each connection before the chardev counts it as connected, so a
 * monitor greets only a peer that completed it and, when an authz object
 * is named, passed it (checked at each connection, by id, as the
 * reference does).
 *
 * Global state: runs on the main loop, where chardevs live.
 */
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { log } from '../../common/log';
import { assertMainLoop } from '../../common/thread-context';
import { authzAllows } from '../../crypto/authz';
import { clientTlsOptions, serverTlsOptions } from '../../crypto/tls-options';
import type { TlsCredentials } from '../../crypto/tls-credentials';
import { certificateInfo } from '../../crypto/x509-info';
import { authzRulesOf } from '../../objects/objects';

export interface ChardevTls {
  creds: TlsCredentials;
  /** The id of an authz object the peer's identity must pass. */
  authz?: string;
}

/** The name tls-authz checks: the PSK username, or the client certificate's DN when peers are verified. */
function peerIdentity(secure: tls.TLSSocket, creds: TlsCredentials, pskUser: string | undefined): string | undefined {
  if (creds.type === 'psk') return pskUser ?? '';
  if (!creds.verifyPeer) return undefined;
  const cert = secure.getPeerX509Certificate();
  return cert ? certificateInfo(cert.raw).subject : '';
}

/** Server side: hands the session to `ready` once the handshake and the authz check pass; drops the connection otherwise. */
export function acceptTls(socket: net.Socket, config: ChardevTls, chardev: string, ready: (secure: tls.TLSSocket) => void): void {
  assertMainLoop();
  let pskUser: string | undefined;
  let secure: tls.TLSSocket;
  try {
    secure = new tls.TLSSocket(socket, serverTlsOptions(config.creds, (user) => (pskUser = user)));
  } catch (err) {
    log.warn({ chardev, err: (err as Error).message }, 'chardev TLS session could not be set up');
    socket.destroy();
    return;
  }
  const fail = (why: string): void => {
    log.warn({ chardev, reason: why }, 'chardev client refused');
    secure.destroy();
  };
  secure.once('error', (err) => fail(err.message));
  secure.once('secure', () => {
    const identity = peerIdentity(secure, config.creds, pskUser);
    if (config.authz !== undefined && identity !== undefined) {
      const rules = authzRulesOf(config.authz);
      if (!rules) return fail(`No authorization object with id '${config.authz}'`);
      if (!authzAllows(rules, identity)) return fail(`TLS authz check for ${identity} is denied`);
    }
    secure.removeAllListeners('error');
    ready(secure);
  });
}

/** Client side: the handshake over a connected socket, checking the server's name against `host` when it is one. */
export function connectTls(socket: net.Socket, config: ChardevTls, host: string | undefined): Promise<tls.TLSSocket> {
  assertMainLoop();
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ ...clientTlsOptions(config.creds, host), socket });
    secure.once('error', reject);
    secure.once('secureConnect', () => {
      secure.off('error', reject);
      resolve(secure);
    });
  });
}
