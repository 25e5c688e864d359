/**
 * An entry point into the graph for users that live in an I/O context
 * (exports, job run-halves): like QEMU's BlockBackend, it holds new requests
 * while its root node is drained.
 */
import type { BlockStatus, WriteFlags, ZeroFlags } from '../common/io-types';
import { waitWhileQuiesced } from './drain';
import type { IoNode } from './io-node';
import { blockStatusNode, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from './request';

export class IoBackend {
  constructor(public root: IoNode) {}

  get length(): number {
    return this.root.length;
  }

  // Each entry point calls straight through unless the root is drained: no extra promise on the fast path.
  read(offset: number, buf: Buffer): Promise<void> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.read(offset, buf)) : readNode(this.root, offset, buf);
  }

  write(offset: number, buf: Buffer, flags: WriteFlags = {}): Promise<void> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.write(offset, buf, flags)) : writeNode(this.root, offset, buf, flags);
  }

  writeZeroes(offset: number, bytes: number, flags: ZeroFlags = {}): Promise<void> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.writeZeroes(offset, bytes, flags)) : writeZeroesNode(this.root, offset, bytes, flags);
  }

  discard(offset: number, bytes: number): Promise<void> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.discard(offset, bytes)) : discardNode(this.root, offset, bytes);
  }

  flush(): Promise<void> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.flush()) : flushNode(this.root);
  }

  blockStatus(offset: number, bytes: number): Promise<BlockStatus> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.blockStatus(offset, bytes)) : blockStatusNode(this.root, offset, bytes);
  }
}
