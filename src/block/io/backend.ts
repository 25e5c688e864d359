/**
 * An entry point into the graph for users that live in an I/O context
 * (exports, job run-halves): like QEMU's BlockBackend, it holds new requests
 * while its root node is drained.
 */
import type { BlockStatus, WriteFlags, ZeroFlags } from '../common/io-types';
import type { AcctKind } from '../common/node-stats';
import { waitWhileQuiesced } from './drain';
import type { IoNode } from './io-node';
import { blockStatusNode, countInvalidRequest, discardNode, flushNode, readNode, writeNode, writeZeroesNode } from './request';

/** The backends of each root, so that a graph change can hand them to the node that replaced it. */
const backendsByRoot = new WeakMap<IoNode, Set<WeakRef<IoBackend>>>();

export class IoBackend {
  private rootNode!: IoNode;

  constructor(root: IoNode) {
    this.root = root;
  }

  get root(): IoNode {
    return this.rootNode;
  }

  set root(node: IoNode) {
    let set = backendsByRoot.get(node);
    if (!set) backendsByRoot.set(node, (set = new Set()));
    set.add(new WeakRef(this));
    this.rootNode = node;
  }

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

  /** A request its user refused before sending it (past the end, on a read-only export): counted on the root node. */
  countInvalid(kind: AcctKind): void {
    countInvalidRequest(this.root, kind);
  }

  blockStatus(offset: number, bytes: number): Promise<BlockStatus> {
    const held = waitWhileQuiesced(this.root);
    return held ? held.then(() => this.blockStatus(offset, bytes)) : blockStatusNode(this.root, offset, bytes);
  }
}

/**
 * Points every backend whose root is `from` at `to` (an overlay taking a
 * node's place). The main loop sends this inside a drained section of both.
 */
export function replaceBackendRoot(from: IoNode, to: IoNode): void {
  const set = backendsByRoot.get(from);
  if (!set) return;
  backendsByRoot.delete(from);
  for (const ref of set) {
    const backend = ref.deref();
    if (backend && backend.root === from) backend.root = to;
  }
}
