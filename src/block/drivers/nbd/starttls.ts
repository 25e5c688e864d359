/**
 * The client's TLS handshake after NBD_OPT_STARTTLS: the plain socket is
 * wrapped, the server's certificate checked against the host name (or the
 * PSK agreed), and negotiation goes on inside the session. Errors are
 * worded as QEMU's client (GnuTLS) words them.
 */
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { clientTlsOptions } from '../../../crypto/tls-options';
import { IoError } from '../../common/io-types';
import type { NbdClientTls } from './common';
import { SocketReader } from './socket-reader';

/** OpenSSL's verification failures that GnuTLS reports as an unknown issuer. */
const UNKNOWN_ISSUER = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE']);

function handshakeError(err: NodeJS.ErrnoException, tlsOpts: NbdClientTls): IoError {
  const code = err.code ?? '';
  // PSK credentials with a certificate server: GnuTLS finds nothing to agree on before any certificate is looked at.
  if (tlsOpts.creds.type === 'psk' && (UNKNOWN_ISSUER.has(code) || code.startsWith('CERT_'))) {
    return new IoError('ECONNABORTED', 'TLS handshake failed: Insufficient credentials for that request.');
  }
  if (UNKNOWN_ISSUER.has(code)) return new IoError('EINVAL', "The certificate hasn't got a known issuer");
  if (code === 'CERT_HAS_EXPIRED') return new IoError('EINVAL', 'The certificate has expired');
  if (code === 'CERT_NOT_YET_VALID') return new IoError('EINVAL', 'The certificate is not yet activated');
  if (code === 'CERT_REVOKED') return new IoError('EINVAL', 'The certificate has been revoked');
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return new IoError('EINVAL', `Certificate does not match the hostname ${tlsOpts.hostname ?? ''}`);
  // The peer hung up or sent an alert: the session could not be agreed on.
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_SSL_SSLV3_ALERT_BAD_RECORD_MAC' || /DECRYPT|BAD_RECORD_MAC/.test(code)) {
    return new IoError('ECONNABORTED', 'TLS handshake failed: The TLS connection was non-properly terminated.');
  }
  return new IoError('ECONNABORTED', 'TLS handshake failed: Insufficient credentials for that request.');
}

/**
 * Runs the handshake on `socket` (whose plain reader must already be
 * released); resolves with the TLS socket and a reader already listening
 * on it, so an alert the server sends right after the handshake (a client
 * certificate it refuses) is not missed.
 */
export function startTls(socket: net.Socket, tlsOpts: NbdClientTls): Promise<{ socket: tls.TLSSocket; reader: SocketReader }> {
  const { creds, hostname } = tlsOpts;
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ ...clientTlsOptions(creds, hostname), socket, ...(hostname !== undefined ? { host: hostname } : {}) });
    const onClose = (): void => fail(new IoError('ECONNABORTED', 'TLS handshake failed: The TLS connection was non-properly terminated.'));
    const onError = (err: Error): void => fail(handshakeError(err as NodeJS.ErrnoException, tlsOpts));
    const cleanup = (): void => {
      secure.off('error', onError);
      secure.off('close', onClose);
    };
    function fail(err: IoError): void {
      cleanup();
      secure.destroy();
      reject(err);
    }
    secure.once('error', onError);
    secure.once('close', onClose);
    secure.once('secureConnect', () => {
      // QEMU checks the certificate's name only when it knows one, and then insists on knowing one.
      if (creds.type === 'x509' && creds.verifyPeer && hostname === undefined) {
        fail(new IoError('EINVAL', 'No hostname for certificate validation'));
        return;
      }
      cleanup();
      resolve({ socket: secure, reader: new SocketReader(secure, tlsReadError) });
    });
  });
}

/**
 * A read that failed inside the session, as QEMU's TLS channel reports it:
 * GnuTLS calls an end without close_notify a premature termination
 * (ECONNABORTED) and any other failure, an alert or a reset, EIO. A server
 * refusing the client's certificate after the handshake ends either way.
 */
export function tlsReadError(err?: Error): IoError {
  return err === undefined
    ? new IoError('ECONNABORTED', 'Cannot read from TLS channel: Software caused connection abort')
    : new IoError('EIO', 'Cannot read from TLS channel: Input/output error');
}
