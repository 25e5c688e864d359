/**
 * The connection of an nbd node across server restarts. While connected,
 * requests go straight to the transmission. When the connection breaks:
 *
 * - with a reconnect delay, requests (those in flight without a reply, and
 *   new ones) wait while connections are tried in the background; once one
 *   succeeds they are sent again; when the delay runs out they fail with EIO;
 * - without one, or after the delay, each request makes one reconnection
 *   attempt of its own and fails with EIO if it does not succeed.
 *
 * A request is only ever resent when no reply to it arrived, so a write the
 * server acknowledged is never written twice nor reported lost.
 */
import { log } from '../../../common/log';
import { IoError } from '../../common/io-types';
import { TFLAG } from '../../../exports/nbd/protocol';
import type { NbdConnectOptions, NbdExportInfo } from './common';
import { connectOnce } from './connect';
import { ConnectionLost, type Extent, Transmission } from './transmission';

type State = 'connected' | 'waiting' | 'failing' | 'closed';

/** Seconds between reconnection attempts while requests wait. */
const RETRY_INTERVAL_MS = 1000;

export class NbdClient {
  private state: State;
  private transmission: Transmission | undefined;
  /** Resolved when the waiting ends, either way. */
  private waitEnd: Promise<void> | undefined;
  private endWait: (() => void) | undefined;
  /** A reconnection attempt under way, shared by the requests that asked for it. */
  private attempt: Promise<boolean> | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: NbdConnectOptions,
    readonly info: NbdExportInfo,
    private readonly reconnectDelay: number,
    private readonly nodeName: string,
    first: Transmission | undefined,
  ) {
    if (first) {
      this.state = 'connected';
      this.adopt(first);
    } else {
      // Built again in another I/O context: connect now, requests wait as after a drop.
      this.state = 'failing';
      this.lost();
    }
  }

  /** Runs one request, across reconnects when the delay allows. */
  async request(cmd: number, flags: number, offset: number, length: number, payload?: Buffer, buffer?: Buffer): Promise<Extent | undefined> {
    for (;;) {
      switch (this.state) {
        case 'closed':
          throw new IoError('EIO', 'NBD node is closed');
        case 'waiting':
          await this.waitEnd;
          continue;
        case 'failing':
          if (!(await this.tryReconnect())) throw new IoError('EIO', `NBD server of node ${this.nodeName} is not connected`);
          continue;
        case 'connected':
          try {
            return await this.transmission!.request(cmd, flags, offset, length, payload, buffer);
          } catch (err) {
            // The connection broke: its close listener has already moved the state on.
            const now = this.currentState();
            if (!(err instanceof ConnectionLost) || now === 'closed') throw err;
            if (now === 'failing') throw new IoError('EIO', err.message);
            // Waiting for a reconnect, or already reconnected: send the request again.
            continue;
          }
      }
    }
  }

  /** The state, read afresh after an await (the compiler keeps the value narrowed before it). */
  private currentState(): State {
    return this.state;
  }

  async close(): Promise<void> {
    const t = this.transmission;
    this.state = 'closed';
    clearTimeout(this.reconnectTimer);
    this.finishWaiting();
    this.transmission = undefined;
    if (t) {
      // A server that does not answer must not hold the node's removal for long.
      const timer = setTimeout(() => t.destroy(), 5000);
      try {
        await t.disconnect();
      } finally {
        clearTimeout(timer);
      }
    }
  }

  private adopt(t: Transmission): void {
    this.transmission = t;
    t.onClose((err) => {
      if (this.transmission !== t || this.state === 'closed') return;
      log.warn({ node: this.nodeName, err: err.message }, 'NBD connection lost');
      this.transmission = undefined;
      this.lost();
    });
  }

  /** The connection is gone: wait for a new one for the reconnect delay, or fail from now on. */
  private lost(): void {
    if (this.reconnectDelay <= 0) {
      this.state = 'failing';
      return;
    }
    this.state = 'waiting';
    this.waitEnd = new Promise((resolve) => (this.endWait = resolve));
    const deadline = Date.now() + this.reconnectDelay * 1000;
    const retry = async (): Promise<void> => {
      if (this.state !== 'waiting') return;
      if (await this.tryReconnect()) return;
      if (this.state !== 'waiting') return;
      const left = deadline - Date.now();
      if (left <= 0) {
        log.warn({ node: this.nodeName }, 'NBD reconnect delay expired');
        this.state = 'failing';
        this.finishWaiting();
        return;
      }
      this.reconnectTimer = setTimeout(() => void retry(), Math.min(RETRY_INTERVAL_MS, left));
    };
    void retry();
  }

  private finishWaiting(): void {
    const end = this.endWait;
    this.endWait = undefined;
    this.waitEnd = undefined;
    end?.();
  }

  /** One reconnection attempt (shared by concurrent askers); true once connected. */
  private tryReconnect(): Promise<boolean> {
    this.attempt ??= this.reconnectOnce().finally(() => (this.attempt = undefined));
    return this.attempt;
  }

  private async reconnectOnce(): Promise<boolean> {
    let t: Transmission;
    try {
      t = await connectOnce(this.options);
    } catch (err) {
      log.debug({ node: this.nodeName, err: (err as Error).message }, 'NBD reconnect failed');
      return false;
    }
    if (this.state === 'closed') {
      t.destroy();
      return false;
    }
    const mismatch = this.changed(t.info);
    if (mismatch) {
      log.warn({ node: this.nodeName, mismatch }, 'NBD server changed across reconnect');
      t.destroy();
      return false;
    }
    this.adopt(t);
    this.state = 'connected';
    clearTimeout(this.reconnectTimer);
    this.finishWaiting();
    log.info({ node: this.nodeName }, 'NBD connection re-established');
    return true;
  }

  /** What must not change for the requests of this node to mean the same thing. */
  private changed(info: NbdExportInfo): string | undefined {
    if (info.size !== this.info.size) return `export size changed from ${this.info.size} to ${info.size}`;
    const lost = this.info.flags & ~info.flags & ~TFLAG.READ_ONLY;
    if (lost) return `server lost capabilities 0x${lost.toString(16)}`;
    if (info.flags & TFLAG.READ_ONLY && !(this.info.flags & TFLAG.READ_ONLY)) return 'export became read-only';
    if (info.structuredReplies !== this.info.structuredReplies || info.metaContextId === undefined !== (this.info.metaContextId === undefined)) return 'negotiated features changed';
    return undefined;
  }
}
