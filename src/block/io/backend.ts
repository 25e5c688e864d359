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

  async read(offset: number, buf: Buffer): Promise<void> {
    await waitWhileQuiesced(this.root);
    return readNode(this.root, offset, buf);
  }

  async write(offset: number, buf: Buffer, flags: WriteFlags = {}): Promise<void> {
    await waitWhileQuiesced(this.root);
    return writeNode(this.root, offset, buf, flags);
  }

  async writeZeroes(offset: number, bytes: number, flags: ZeroFlags = {}): Promise<void> {
    await waitWhileQuiesced(this.root);
    return writeZeroesNode(this.root, offset, bytes, flags);
  }

  async discard(offset: number, bytes: number): Promise<void> {
    await waitWhileQuiesced(this.root);
    return discardNode(this.root, offset, bytes);
  }

  async flush(): Promise<void> {
    await waitWhileQuiesced(this.root);
    return flushNode(this.root);
  }

  async blockStatus(offset: number, bytes: number): Promise<BlockStatus> {
    await waitWhileQuiesced(this.root);
    return blockStatusNode(this.root, offset, bytes);
  }
}
