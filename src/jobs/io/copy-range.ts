/**
 * Copies a range from a source node to a target node through the generic
 * request layer. Holes of the source (block status ZERO) are not read: the
 * target is zeroed there only when it does not already read as zeros.
 * Errors name the side they came from, for on-source-error/on-target-error.
 */
import { IoError, STATUS } from '../../block/common/io-types';
import type { IoNode } from '../../block/io/io-node';
import { blockStatusNode, readNode, writeNode, writeZeroesNode } from '../../block/io/request';

/** The largest single copy request of a job's loop. */
export const MAX_COPY_REQUEST = 1 << 20;

export class CopyError extends Error {
  constructor(
    readonly side: 'source' | 'target',
    readonly reason: unknown,
  ) {
    super((reason as Error).message);
  }

  get code(): string {
    return (this.reason as IoError).code ?? 'EIO';
  }
}

async function onSource<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new CopyError('source', err);
  }
}

async function onTarget<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new CopyError('target', err);
  }
}

/** True when all of [offset, offset + bytes) of `node` reads as zeros according to block status. */
async function readsAsZero(node: IoNode, offset: number, bytes: number): Promise<boolean> {
  for (let at = offset; at < offset + bytes; ) {
    const st = await blockStatusNode(node, at, offset + bytes - at);
    if (!(st.status & STATUS.ZERO)) return false;
    at += st.bytes;
  }
  return true;
}

export interface CopyOptions {
  /** Zero the target by punching holes where it can. */
  unmap: boolean;
  /** Write data to the target compressed (backup's `compress`). */
  compress?: boolean;
}

/** Copies [offset, offset + bytes); `buf` holds at least `bytes`. */
export async function copyRange(source: IoNode, target: IoNode, offset: number, bytes: number, buf: Buffer, opts: CopyOptions): Promise<void> {
  const end = offset + bytes;
  for (let at = offset; at < end; ) {
    const st = await onSource(blockStatusNode(source, at, end - at));
    let n = Math.min(st.bytes, end - at);
    if (st.status & STATUS.ZERO) {
      if (!(await onTarget(readsAsZero(target, at, n)))) await onTarget(writeZeroesNode(target, at, n, { mayUnmap: opts.unmap }));
    } else {
      n = Math.min(n, buf.length);
      const piece = buf.subarray(0, n);
      await onSource(readNode(source, at, piece));
      await onTarget(writeNode(target, at, piece, { compressed: opts.compress === true }));
    }
    at += n;
  }
}

/** Buffers of one size, reused across requests of a copy loop. */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(readonly size: number) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buf: Buffer): void {
    if (this.free.length < 32) this.free.push(buf);
  }
}
