/** A stream transport over a net.Socket (UNIX or TCP): messages end with CRLF, as QEMU's monitor writes them. */
import type { Socket } from 'node:net';
import type { Transport } from '../transport';

export function socketTransport(sock: Socket, peer: string): Transport {
  sock.setNoDelay?.(true);
  // Nothing is read until the monitor takes the connection.
  sock.pause();
  const closeCallbacks: Array<() => void> = [];
  let closed = false;
  const fireClose = (): void => {
    if (closed) return;
    closed = true;
    for (const cb of closeCallbacks) cb();
  };
  sock.on('close', fireClose);
  sock.on('error', () => sock.destroy());
  return {
    peer,
    send: (text) => {
      if (!sock.destroyed) sock.write(text + '\r\n');
    },
    pause: () => sock.pause(),
    resume: () => sock.resume(),
    close: () => sock.destroy(),
    onData: (cb) => sock.on('data', cb),
    onClose: (cb) => (closed ? cb() : closeCallbacks.push(cb)),
  };
}
