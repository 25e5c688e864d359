/**
 * The block-job layer over the job core, on the main loop: what a job that
 * copies between block nodes adds — its edges in the graph (a `block-job`
 * parent), the run half in the I/O context of its nodes and the control
 * block both halves share, speed, io-status, BlockJobInfo for
 * query-block-jobs, and the BLOCK_JOB_* events at QEMU's points.
 */
import { assertMainLoop } from '../common/thread-context';
import { log } from '../common/log';
import { QmpError } from '../qmp/errors';
import { emitEvent } from '../qmp/events';
import type { BackendParent, BdrvChild, BlockNode } from '../block/global-state/block-node';
import { attachChild, detachChild } from '../block/global-state/graph';
import type { IoContext } from '../block/global-state/io-context';
import { CANCEL_HARD, CANCEL_SOFT, JobControl, jobNotice, jobPrepare, jobRelease, jobRun, type JobNotice, type OnError, type RunParams } from './common/job-control';
import type { Job, JobDriver } from './job';
import { createJob } from './job-registry';
import { registerDeleteBlocker } from '../block/global-state/blockdev';

export type BlockJobType = 'mirror' | 'backup' | 'commit' | 'stream';

/** What a kind of block job adds to the generic block-job behaviour. */
export interface BlockJobKind {
  /** After the run: the job's own graph changes for success (mirror's pivot). */
  commit?(bj: BlockJob): Promise<void>;
  /** After a failed or cancelled run, instead of commit. */
  abort?(bj: BlockJob): Promise<void>;
  /** Always after commit or abort: undoes the job's graph changes. */
  clean(bj: BlockJob): Promise<void>;
  /** job-complete; absent: the job cannot be completed. */
  complete?(bj: BlockJob): void;
  /** Whether a cancel with this `force` is hard (mirror: soft after READY unless forced). */
  hardCancel?(bj: BlockJob, force: boolean): boolean;
  /**
   * Shown as paused while it waits to be finalized: QEMU's mirror keeps its
   * source drained from its last pass until then, which counts as a pause.
   * qbd's mirror keeps copying writes until its final copy at finalize, but
   * reports the job as the reference does.
   */
  pausedUntilFinalized?: boolean;
}

const blockJobs = new Map<string, BlockJob>();
const listening = new WeakSet<IoContext>();

export class BlockJob {
  readonly job: Job;
  readonly control = new JobControl();
  /** The job as a parent in the graph (x-debug-query-block-graph type `block-job`). */
  readonly parent: BackendParent;
  readonly edges: BdrvChild[] = [];
  ioStatus: 'ok' | 'failed' | 'nospace' = 'ok';
  speed = 0;
  /** Set once the run half exists in `ctx`. */
  private prepared = false;

  constructor(
    id: string,
    readonly type: BlockJobType,
    readonly ctx: IoContext,
    private readonly kind: BlockJobKind,
    options: { autoFinalize: boolean; autoDismiss: boolean },
  ) {
    assertMainLoop();
    this.parent = { kind: 'backend', name: id, graphType: 'block-job', jobType: type };
    const driver: JobDriver = {
      type,
      run: () => this.run(),
      commit: kind.commit ? () => kind.commit!(this) : undefined,
      abort: kind.abort ? () => kind.abort!(this) : undefined,
      clean: () => this.clean(),
      complete: kind.complete ? () => this.completeRequested() : undefined,
      cancel: (_j, force) => this.cancelRequested(force),
      pauseChanged: (_j, paused) => this.control.setPaused(paused),
    };
    this.job = createJob(id, driver, options);
    this.job.hooks = {
      ready: () => emitEvent('BLOCK_JOB_READY', this.eventData()),
      pending: () => emitEvent('BLOCK_JOB_PENDING', { type: this.type, id: this.id }),
      finished: () => {
        this.syncProgress();
        if (this.job.isCancelled) emitEvent('BLOCK_JOB_CANCELLED', this.eventData());
        else emitEvent('BLOCK_JOB_COMPLETED', { ...this.eventData(), ...(this.job.error !== undefined ? { error: this.job.error } : {}) });
      },
    };
    blockJobs.set(id, this);
  }

  get id(): string {
    return this.job.id;
  }

  /** Adds an edge from the job to `node` (the caller drains it). */
  addEdge(node: BlockNode, role: string, perm: number, shared: number): BdrvChild {
    const edge = attachChild(this.parent, node, role, { perm, shared });
    this.edges.push(edge);
    return edge;
  }

  /** Runs `fn`, which adds the job's edges; if it fails, the edges it added go again. */
  async withEdges(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.dropEdges();
      throw err;
    }
  }

  /** Removes the job's edges (the caller drains their nodes). */
  dropEdges(): void {
    for (const edge of this.edges.splice(0)) detachChild(edge);
  }

  /** Validates and sets `speed` (QEMU checks it after creating the job). */
  setSpeed(speed: number): void {
    if (speed < 0) throw QmpError.generic(`Parameter 'speed' expects a non-negative value`);
    this.speed = speed;
    this.control.setSpeed(speed);
  }

  /** Creates the run half in the nodes' I/O context; from here on, writes are tracked or copied before they land. */
  async prepare(params: RunParams): Promise<void> {
    if (!listening.has(this.ctx)) {
      listening.add(this.ctx);
      this.ctx.channel.onNotification(jobNotice, (notice) => blockJobs.get(notice.id)?.onNotice(notice));
    }
    await this.ctx.channel.request(jobPrepare, { id: this.id, control: this.control.buffer, params });
    this.prepared = true;
    this.syncProgress();
  }

  private async run(): Promise<void> {
    try {
      await this.ctx.channel.request(jobRun, { id: this.id });
    } finally {
      this.syncProgress();
    }
  }

  private async clean(): Promise<void> {
    try {
      await this.kind.clean(this);
    } finally {
      if (this.prepared) {
        this.prepared = false;
        await this.ctx.channel.request(jobRelease, { id: this.id }).catch((err: Error) => log.error({ job: this.id, err: err.message }, 'releasing the run half failed'));
      }
      this.syncProgress();
    }
  }

  private completeRequested(): void {
    this.kind.complete!(this);
    this.control.requestComplete();
  }

  private cancelRequested(force: boolean): boolean {
    const hard = this.kind.hardCancel ? this.kind.hardCancel(this, force) : true;
    this.control.requestCancel(hard ? CANCEL_HARD : CANCEL_SOFT);
    return hard;
  }

  private onNotice(notice: JobNotice): void {
    assertMainLoop();
    if (notice.what === 'ready') {
      this.syncProgress();
      this.job.setReady();
      return;
    }
    if (notice.what === 'parked') {
      this.job.reachedPausePoint();
      return;
    }
    // BLOCK_JOB_ERROR, then for `stop` the pause, as QEMU's block_job_error_action.
    if (notice.action === 'stop') this.ioStatus = notice.nospace ? 'nospace' : 'failed';
    emitEvent('BLOCK_JOB_ERROR', { device: this.id, operation: notice.operation, action: notice.action });
    if (notice.action === 'stop' && !this.job.isCancelled) {
      if (this.job.userPaused) return;
      this.job.userPaused = true;
      this.job.pauseInternal(true);
    }
  }

  /** Called by resume: an error pause is over. */
  clearIoStatus(): void {
    this.ioStatus = 'ok';
  }

  /** Copies the progress the run half publishes into the job (no message needed). */
  syncProgress(): void {
    if (!this.prepared && this.control.len === 0) return;
    this.job.progressCurrent = this.control.offset;
    this.job.progressTotal = this.control.len;
  }

  private eventData(): Record<string, unknown> {
    return { type: this.type, device: this.id, len: this.job.progressTotal, offset: this.job.progressCurrent, speed: this.speed };
  }

  /** BlockJobInfo, for query-block-jobs. */
  info(): Record<string, unknown> {
    this.syncProgress();
    const job = this.job;
    const info: Record<string, unknown> = {
      type: this.type,
      device: this.id,
      len: job.progressTotal,
      offset: job.progressCurrent,
      busy: !job.paused && this.control.busy && (job.status === 'running' || job.status === 'ready'),
      paused: job.paused || (this.kind.pausedUntilFinalized === true && (job.status === 'pending' || job.status === 'waiting')),
      speed: this.speed,
      'io-status': this.ioStatus,
      ready: job.isReady,
      status: job.status,
      'auto-finalize': job.options.autoFinalize,
      'auto-dismiss': job.options.autoDismiss,
    };
    if (job.error !== undefined) info.error = job.error;
    return info;
  }
}

/** Dismissed jobs (status null) leave query-block-jobs. */
function prune(): void {
  for (const [id, bj] of blockJobs) if (bj.job.status === 'null') blockJobs.delete(id);
}

/** The block job `device` names (QEMU: the job id), for block-job-* commands. */
export function findBlockJob(device: string): BlockJob {
  assertMainLoop();
  prune();
  const bj = blockJobs.get(device);
  if (!bj) throw new QmpError('DeviceNotActive', `Block job '${device}' not found`);
  return bj;
}

/** By job id, for query-jobs to read fresh progress. */
export function blockJobOf(id: string): BlockJob | undefined {
  prune();
  return blockJobs.get(id);
}

/** query-block-jobs, in creation order. */
export function allBlockJobs(): BlockJob[] {
  assertMainLoop();
  prune();
  return [...blockJobs.values()];
}

/** What both job kinds check and default the same way. */
export interface CommonJobArgs {
  'job-id'?: string;
  device: string;
  speed?: number;
  'on-source-error'?: OnError;
  'on-target-error'?: OnError;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
  'filter-node-name'?: string;
}

/**
 * The block job that uses `node` (an edge of the job, or the job's filter
 * above its source), for QEMU's op blocker message on blockdev-del:
 * "Node 'x' is busy: block device is in use by block job: mirror".
 */
export function jobUsing(node: BlockNode): BlockJob | undefined {
  assertMainLoop();
  prune();
  for (const bj of blockJobs.values()) {
    if (bj.job.status === 'concluded') continue;
    for (const edge of bj.edges) {
      if (edge.child === node) return bj;
      if (edge.child.children.some((c) => c.child === node) && edge.child.driver.descriptor.kind === 'filter') return bj;
    }
  }
  return undefined;
}

/**
 * QEMU's op blockers for a new job: a node a running job holds through one
 * of its own edges (mirror's source, any job's target and filter) takes no
 * second job. A backup's source is only below its filter, and stays free.
 */
export function checkNotInJob(node: BlockNode): void {
  assertMainLoop();
  prune();
  for (const bj of blockJobs.values()) {
    if (bj.job.status === 'concluded' || bj.job.status === 'null') continue;
    if (bj.edges.some((e) => e.child === node)) throw QmpError.generic(`Node '${node.name}' is busy: block device is in use by block job: ${bj.type}`);
  }
}

registerDeleteBlocker((node) => {
  const bj = jobUsing(node);
  return bj ? `block device is in use by block job: ${bj.job.type}` : undefined;
});

