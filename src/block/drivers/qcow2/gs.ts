/**
 * qcow2, GS half: opens the `file` child, reads and validates the header
 * (refusing what qbd cannot handle safely, with the reference's wording where
 * it has one), opens the backing chain, and answers queries. The tables are
 * loaded by the I/O half on first use.
 */
import { log } from '../../../common/log';
import { probeFormat } from '../../global-state/probe-format';
import * as path from 'node:path';
import type { GsDriver, ImageFacts, OpenContext } from '../../global-state/driver-gs';
import type { BlockNode } from '../../global-state/block-node';
import { findNode } from '../../global-state/graph';
import { onIoEvent } from '../../global-state/io-context';
import { QmpError } from '../../../qmp/errors';
import { emitEvent } from '../../../qmp/events';
import { PERM } from '../../common/permissions';
import {
  COMPAT_LAZY_REFCOUNTS,
  CORRUPT_EVENT,
  type CorruptEventData,
  DIRTY_FLAG_EVENT,
  EXT,
  featureName,
  geometry,
  INCOMPAT,
  INCOMPAT_KNOWN,
  l1EntriesFor,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  parseExtensions,
  parseHeader,
  Qcow2FormatError,
  type Qcow2Header,
  type Qcow2State,
} from './common';
import { createQcow2, createQcow2File } from './create';
import { headerWithBacking } from './backing-header';
import * as proto from '../../common/io-context-protocol';
import { IoError } from '../../common/io-types';
import { loadStoredBitmaps, persistentBitmapRefusal } from './gs-bitmaps';
import { readSnapshotTable } from './snapshot-table';

async function readChild(ctx: OpenContext, child: BlockNode, offset: number, bytes: number): Promise<Buffer> {
  const n = Math.max(0, Math.min(bytes, child.length - offset));
  if (n === 0) return Buffer.alloc(0);
  const { data } = await ctx.childRequest(child, { op: 'read', offset, bytes: n });
  return Buffer.from(data!.buffer, data!.byteOffset, data!.byteLength);
}

function unsupportedFeatures(h: Qcow2Header, exts: ReturnType<typeof parseExtensions>): string | undefined {
  const unknown = h.incompatible & ~INCOMPAT_KNOWN;
  if (unknown === 0n) return undefined;
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (!(unknown & (1n << BigInt(bit)))) continue;
    names.push(featureName(exts, 0, bit) ?? `Unknown incompatible feature: ${(1n << BigInt(bit)).toString(16)}`);
  }
  return names.join(', ');
}

function validate(h: Qcow2Header, exts: ReturnType<typeof parseExtensions>): void {
  const unsupported = unsupportedFeatures(h, exts);
  if (unsupported) throw new Qcow2FormatError(`Unsupported qcow2 feature(s): ${unsupported}`);
  if (h.cryptMethod !== 0) throw new Qcow2FormatError('Encrypted qcow2 images are not supported');
  if (h.incompatible & INCOMPAT.DATA_FILE) throw new Qcow2FormatError('qcow2 images with an external data file are not supported');
  if (h.incompatible & INCOMPAT.EXTL2) throw new Qcow2FormatError('qcow2 images with extended L2 entries are not supported');
  if (h.incompatible & INCOMPAT.COMPRESSION && h.compressionType !== 0) {
    if (h.compressionType === 1) throw new Qcow2FormatError('zstd compression of qcow2 images is not supported');
    throw new Qcow2FormatError(`Unknown compression type ${h.compressionType}`);
  }
  const g = geometry(h.clusterBits, h.refcountOrder);
  const cs = g.clusterSize;
  if (h.l1Size * 8 > MAX_L1_BYTES) throw new Qcow2FormatError('Active L1 table too large');
  if (h.l1Size < l1EntriesFor(h.size, g)) throw new Qcow2FormatError('L1 table is too small');
  if (h.l1Size > 0 && (h.l1TableOffset % cs !== 0 || h.l1TableOffset === 0)) throw new Qcow2FormatError('Invalid L1 table offset');
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) throw new Qcow2FormatError('Reference count table too large');
  if (h.refcountTableClusters === 0 || h.refcountTableOffset % cs !== 0 || h.refcountTableOffset === 0) {
    throw new Qcow2FormatError('Invalid reference count table offset');
  }
  if (h.nbSnapshots > 65536) throw new Qcow2FormatError('Too many snapshots');
  if (h.nbSnapshots > 0 && (h.snapshotsOffset % cs !== 0 || h.snapshotsOffset === 0)) throw new Qcow2FormatError('Invalid snapshot table offset');
  if (h.size > 2 ** 53 - cs) throw new Qcow2FormatError('Image size too large');
}

/** The backing file name of the header, resolved against the image's directory. */
function resolveBacking(name: string, file: BlockNode): string {
  if (path.isAbsolute(name) || /^[a-z+]+:\/\//.test(name)) return name;
  const own = file.driver.plainFilename?.(file);
  if (own === undefined) throw QmpError.generic(`Cannot use relative backing file names for '${name}'`);
  return path.join(path.dirname(own), name);
}

/** Image files of the backing chain being opened (opens run one at a time on the main loop). */
const chainInProgress: string[] = [];
const MAX_CHAIN_DEPTH = 256;

async function openBacking(ctx: OpenContext, options: Record<string, unknown>, file: BlockNode, st: Qcow2State): Promise<void> {
  const own = file.driver.plainFilename?.(file);
  const ownPath = own === undefined ? undefined : path.resolve(own);
  if (ownPath !== undefined && chainInProgress.includes(ownPath)) {
    throw QmpError.generic(`Backing file chain loops back to '${own}'`);
  }
  if (chainInProgress.length >= MAX_CHAIN_DEPTH) throw QmpError.generic('Backing file chain too long');
  if (ownPath !== undefined) chainInProgress.push(ownPath);
  try {
    await openBackingChild(ctx, options, file, st);
  } finally {
    if (ownPath !== undefined) chainInProgress.pop();
  }
}

async function openBackingChild(ctx: OpenContext, options: Record<string, unknown>, file: BlockNode, st: Qcow2State): Promise<void> {
  if (options.backing === '') {
    // QEMU's older spelling of null (the only way to say it on a key=value command line once).
    log.warn({ node: options['node-name'] }, 'Use of "backing": "" is deprecated; use "backing": null instead');
    options.backing = null;
  }
  if (options.backing === null) return;
  if (options.backing === undefined) {
    if (st.backingFilename === undefined) return;
    const filename = resolveBacking(st.backingFilename, file);
    const driver = st.backingFormat ?? probeFormat(filename);
    // The backing chain is opened read-only, as the reference does for an implicit backing file.
    options.backing = { driver, 'read-only': true, file: { driver: 'file', filename } };
  } else if (typeof options.backing === 'object') {
    options.backing = { 'read-only': true, ...(options.backing as Record<string, unknown>) };
  }
  try {
    await ctx.openChild('backing', 'backing', false);
  } catch (err) {
    throw QmpError.generic(`Could not open backing file: ${(err as Error).message}`);
  }
}

function stateOf(node: BlockNode): Qcow2State {
  return node.state as Qcow2State;
}

function wireCorruptionEvents(): void {
  onIoEvent(DIRTY_FLAG_EVENT, (_ctx, ev) => {
    const node = ev.node === undefined ? undefined : findNode(ev.node);
    if (node && node.driver === qcow2Gs) stateOf(node).dirty = (ev.data as { dirty: boolean }).dirty;
  });
  onIoEvent(CORRUPT_EVENT, (_ctx, ev) => {
    if (ev.node === undefined) return;
    const node = findNode(ev.node);
    if (node && node.driver === qcow2Gs) stateOf(node).corrupt = true;
    const d = ev.data as CorruptEventData;
    const data: Record<string, unknown> = { device: '', 'node-name': ev.node, msg: d.msg };
    if (d.offset !== undefined) data.offset = d.offset;
    if (d.size !== undefined) data.size = d.size;
    data.fatal = d.fatal;
    emitEvent('BLOCK_IMAGE_CORRUPTED', data);
  });
}

export const qcow2Gs: GsDriver<Qcow2State> = {
  descriptor: { name: 'qcow2', kind: 'format' },
  supportsBacking: true,
  supportsCompressedWrites: true,
  strongOptions: [],

  async open(ctx, options) {
    if (options['data-file'] !== undefined) throw QmpError.generic("'data-file' can only be set if the image is in qcow2 format with an external data file");
    if (options.encrypt !== undefined) throw QmpError.generic('Encrypted qcow2 images are not supported');
    const file = (await ctx.openChild('file', 'file', true))!;
    let h: Qcow2Header;
    let exts: ReturnType<typeof parseExtensions>;
    let first: Buffer;
    try {
      const start = await readChild(ctx, file, 0, 4096);
      h = parseHeader(start);
      first = await readChild(ctx, file, 0, 2 ** h.clusterBits);
      exts = parseExtensions(first, h);
      validate(h, exts);
    } catch (err) {
      if (err instanceof Qcow2FormatError) throw QmpError.generic(err.message);
      throw err;
    }
    let readOnly = ctx.readOnly;
    const corrupt = (h.incompatible & INCOMPAT.CORRUPT) !== 0n;
    const dirty = (h.incompatible & INCOMPAT.DIRTY) !== 0n;
    if (!readOnly && corrupt) {
      if (options['auto-read-only'] !== true) throw QmpError.generic('qcow2: Image is corrupt; cannot be opened read/write');
      readOnly = true;
    }
    if (!readOnly && dirty && h.nbSnapshots > 0) {
      throw QmpError.generic('qcow2: Image is dirty and has internal snapshots; repair it with qemu-img check -r all before opening it read/write');
    }
    const lazyBit = (h.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n;
    // The runtime option overrides the header bit either way, as in the reference.
    const useLazyRefcounts = options['lazy-refcounts'] === undefined ? lazyBit : options['lazy-refcounts'] === true;
    if (useLazyRefcounts && h.version < 3) throw QmpError.generic('Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
    const cs = 2 ** h.clusterBits;
    const backingFilename = h.backingFileOffset ? first.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8') : undefined;
    const fmtExt = exts.find((e) => e.type === EXT.BACKING_FORMAT);
    const st: Qcow2State = {
      version: h.version,
      clusterBits: h.clusterBits,
      refcountOrder: h.refcountOrder,
      nbSnapshots: h.nbSnapshots,
      snapshotsOffset: h.snapshotsOffset,
      corrupt,
      dirty,
      lazyRefcounts: lazyBit,
      useLazyRefcounts,
      l2CacheBytes: Number(options['l2-cache-size'] ?? Math.max(1 << 20, Math.min(32 << 20, (h.size / cs) * 8))),
      refcountCacheBytes: Number(options['refcount-cache-size'] ?? Math.max(256 << 10, 4 * cs)),
      // As in the reference: guest discards reach the file by default when the node unmaps.
      passDiscard: options['pass-discard-request'] === undefined ? options.discard === 'unmap' : options['pass-discard-request'] === true,
      compat: h.version >= 3 ? '1.1' : '0.10',
      extensions: exts.map((e) => ({ type: e.type, length: e.data.length })),
    };
    if (backingFilename !== undefined && backingFilename !== '') st.backingFilename = backingFilename;
    if (fmtExt) st.backingFormat = Buffer.from(fmtExt.data).toString('utf8');
    await openBacking(ctx, options, file, st);
    try {
      st.storedBitmaps = await loadStoredBitmaps(ctx, file, h, exts);
      if (h.nbSnapshots > 0) st.snapshots = await readSnapshotTable((o, n) => readChild(ctx, file, o, n), h.snapshotsOffset, h.nbSnapshots);
    } catch (err) {
      if (err instanceof Qcow2FormatError) throw QmpError.generic(err.message);
      throw err;
    }
    return { state: st, length: h.size, requestAlignment: file.requestAlignment, readOnly };
  },

  childPerms(node, role, perm, shared) {
    if (role === 'backing') {
      const s = (shared & PERM.WRITE ? PERM.WRITE | PERM.RESIZE : 0) | PERM.CONSISTENT_READ | PERM.WRITE_UNCHANGED;
      return { perm: perm & PERM.CONSISTENT_READ, shared: s };
    }
    // Metadata lives in the file: always read consistently, written whenever the node is writable, never shared for writing.
    let p = perm | PERM.CONSISTENT_READ;
    if (!node.readOnly) p |= PERM.WRITE | PERM.RESIZE;
    return { perm: p, shared: shared & ~(PERM.WRITE | PERM.RESIZE) };
  },

  async changeBackingFile(node, name, format) {
    const file = node.child('file')!;
    const st = stateOf(node);
    const request = (r: proto.NodeRequest) => file.ctx.channel.request(proto.nodeRequest, { nodeName: file.name, request: r });
    const clusterSize = 2 ** st.clusterBits;
    const { data } = await request({ op: 'read', offset: 0, bytes: Math.min(clusterSize, file.length) });
    let header: Buffer;
    try {
      header = headerWithBacking(Buffer.from(data!.buffer, data!.byteOffset, data!.byteLength), name, format);
    } catch (err) {
      if (err instanceof Qcow2FormatError) throw new IoError('EINVAL', err.message);
      throw err;
    }
    // One write of the first cluster's used part, then a flush: what QEMU's qcow2_update_header does.
    await request({ op: 'write', offset: 0, data: header });
    await request({ op: 'flush' });
    if (name === undefined || name === '') delete st.backingFilename;
    else st.backingFilename = name;
    if (name !== undefined && format !== undefined && format !== '') st.backingFormat = format;
    else delete st.backingFormat;
  },

  internalSnapshots(node) {
    return stateOf(node).snapshots ?? [];
  },

  internalSnapshotsChanged(node, result) {
    const st = stateOf(node);
    if (result.snapshots.length > 0) st.snapshots = result.snapshots;
    else delete st.snapshots;
    st.nbSnapshots = result.snapshots.length;
    // An I/O half made again from this state (a move to another iothread) must find the new table.
    st.snapshotsOffset = (result.driverData as { snapshotsOffset: number }).snapshotsOffset;
  },

  imageInfo(node) {
    const st = stateOf(node);
    const info: ImageFacts = { clusterSize: 2 ** st.clusterBits, dirtyFlag: st.dirty };
    if (st.snapshots) info.snapshots = st.snapshots;
    if (st.backingFilename !== undefined) info.backingFilename = st.backingFilename;
    if (st.backingFormat !== undefined) info.backingFormat = st.backingFormat;
    return info;
  },

  persistentBitmapRefusal(node, name, granularity, stored) {
    return persistentBitmapRefusal(stateOf(node).version, node.length, name, granularity, stored);
  },

  takeStoredBitmaps(node) {
    const st = stateOf(node);
    const found = st.storedBitmaps ?? [];
    delete st.storedBitmaps;
    return found;
  },

  formatSpecific(node) {
    const st = stateOf(node);
    const data: Record<string, unknown> = { compat: st.compat, 'compression-type': 'zlib' };
    if (st.version >= 3) data['lazy-refcounts'] = st.lazyRefcounts;
    data['refcount-bits'] = 2 ** st.refcountOrder;
    if (st.version >= 3) {
      data.corrupt = st.corrupt;
      data['extended-l2'] = false;
    }
    return { type: 'qcow2', data };
  },

  async amend(_node, options) {
    // qbd opens no encrypted qcow2 image, so there is never an encryption to amend.
    if (options.encrypt !== undefined) throw new Error("image is not encrypted, can't amend");
  },

  create: createQcow2,
  createImageFile: createQcow2File,
};

wireCorruptionEvents();
