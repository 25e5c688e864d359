/**
 * A fresh connection to the server: dial, then negotiate (with TLS when
 * the node has credentials; a reconnect does the handshake again). With an open
 * timeout, failures are retried until it runs out, as QEMU's client does.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { NbdConnectOptions } from './common';
import { dial } from './dial';
import { negotiate } from './negotiate';
import { Transmission } from './transmission';

export async function connectOnce(options: NbdConnectOptions): Promise<Transmission> {
  const socket = await dial(options.server);
  try {
    const negotiated = await negotiate(socket, options);
    return new Transmission(negotiated.socket, negotiated.info, negotiated.leftover);
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/** Tries until success or until `timeoutSeconds` have passed (0: once); the last error wins. */
export async function connectWithTimeout(options: NbdConnectOptions, timeoutSeconds: number): Promise<Transmission> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    try {
      return await connectOnce(options);
    } catch (err) {
      const left = deadline - Date.now();
      if (left <= 0) throw err;
      await sleep(Math.min(1000, left));
    }
  }
}
