/**
 * The I/O half of a node: what its context needs to serve requests. The
 * children map is the context's view of the graph; only the main loop
 * changes it, through messages, inside drained sections.
 */
import type { IoNodeDescriptor } from '../common/node-descriptor';
import type { SharedDirtyBitmap } from '../common/shared-dirty-bitmap';
import type { IoDriver } from './driver-io';
import { NodeIoStats } from './node-stats';

export class IoNode<S = unknown> {
  readonly name: string;
  readonly driver: IoDriver<S>;
  state: S;
  length: number;
  readOnly: boolean;
  readonly requestAlignment: number;
  readonly maxTransfer: number;
  readonly detectZeroes: IoNodeDescriptor['detectZeroes'];
  readonly discardMode: IoNodeDescriptor['discard'];
  readonly children = new Map<string, IoNode>();
  readonly parents = new Set<IoNode>();

  /** Write threshold in bytes (block-set-write-threshold); 0 when none is set. */
  writeThreshold = 0;

  /** Requests in flight on this node (including those its parents sent down). */
  inFlight = 0;
  /** > 0 while a drained section covers this node. */
  quiesce = 0;
  /** Drain waiters, woken when inFlight drops to zero. */
  idleWaiters: Array<() => void> = [];
  /** The dirty bitmaps writes to this node mark (`dirty-tracking.ts`). */
  dirtyBitmaps: SharedDirtyBitmap[] = [];
  /** What the request layer counted on this node (query-blockstats). */
  readonly stats = new NodeIoStats();

  constructor(desc: IoNodeDescriptor, driver: IoDriver<S>) {
    this.name = desc.nodeName;
    this.driver = driver;
    this.length = desc.length;
    this.readOnly = desc.readOnly;
    this.requestAlignment = desc.requestAlignment;
    this.maxTransfer = desc.maxTransfer;
    this.detectZeroes = desc.detectZeroes;
    this.discardMode = desc.discard;
    this.writeThreshold = desc.writeThreshold ?? 0;
    if (desc.stats) this.stats.restore(desc.stats);
    this.state = driver.attach(desc);
    this.length = driver.currentLength?.(this.state) ?? desc.length;
  }

  child(role: string): IoNode {
    const c = this.children.get(role);
    if (!c) throw new Error(`node ${this.name} has no ${role} child`);
    return c;
  }

  /** The child that holds a format's or filter's data, if any. */
  get file(): IoNode | undefined {
    return this.children.get('file');
  }

  get backing(): IoNode | undefined {
    return this.children.get('backing');
  }
}
