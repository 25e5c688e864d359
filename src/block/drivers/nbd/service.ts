/**
 * The nbd client's service in an I/O context: the GS half's `open` asks the
 * context to connect and negotiate, so the socket lives where the node's
 * requests will run. The connection waits here, under a token, until the
 * node's I/O half attaches and takes it.
 */
import type { IoContextRuntime } from '../../io/context-services';
import { nbdClientConnect, nbdClientRelease } from './common';
import { connectWithTimeout } from './connect';
import type { Transmission } from './transmission';

const parked = new Map<number, Transmission>();

/** The connection `open` made for a node, once; undefined when the node was built again elsewhere. */
export function takeParked(token: number): Transmission | undefined {
  const t = parked.get(token);
  parked.delete(token);
  return t;
}

export function installNbdClientService(runtime: IoContextRuntime): void {
  runtime.channel.onRequest(nbdClientConnect, async ({ token, options, openTimeout }) => {
    const t = await connectWithTimeout(options, openTimeout);
    parked.set(token, t);
    return t.info;
  });
  runtime.channel.onRequest(nbdClientRelease, ({ token }) => {
    takeParked(token)?.destroy();
  });
}
