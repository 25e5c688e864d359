/**
 * Opening the socket to an NBD server: a UNIX path or a TCP host and port,
 * with QEMU's error texts ("Failed to connect to '…': Connection refused").
 */
import * as net from 'node:net';
import { strerror } from '../../../common/errno';
import { IoError } from '../../common/io-types';
import type { NbdServerAddress } from './common';

/** The address as QEMU prints it in connection errors. */
export function describeAddress(a: NbdServerAddress): string {
  return a.type === 'unix' ? a.path : `${a.host}:${a.port}`;
}

const RESOLVER_MESSAGES: Record<string, string> = {
  ENOTFOUND: 'Name or service not known',
  EAI_AGAIN: 'Temporary failure in name resolution',
  EAI_FAIL: 'Non-recoverable failure in name resolution',
  EAI_NONAME: 'Name or service not known',
};

function connectError(a: NbdServerAddress, err: NodeJS.ErrnoException): IoError {
  const code = err.code ?? 'EIO';
  if (a.type === 'inet' && RESOLVER_MESSAGES[code]) {
    return new IoError('EHOSTUNREACH', `address resolution failed for ${describeAddress(a)}: ${RESOLVER_MESSAGES[code]}`);
  }
  return new IoError(code, `Failed to connect to '${describeAddress(a)}': ${strerror(code)}`);
}

export function dial(a: NbdServerAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    if (a.type === 'unix') {
      socket = net.connect({ path: a.path });
    } else {
      const port = Number(a.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        reject(new IoError('EINVAL', `address resolution failed for ${describeAddress(a)}: Servname not supported for ai_socktype`));
        return;
      }
      socket = net.connect({ host: a.host, port, ...(a.family ? { family: a.family } : {}), noDelay: true, keepAlive: a.keepAlive === true });
    }
    const onError = (err: Error): void => {
      socket.destroy();
      reject(connectError(a, err as NodeJS.ErrnoException));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}
