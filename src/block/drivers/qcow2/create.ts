/**
 * qcow2, GS half: blockdev-create. Lays out a fresh image on an open `file`
 * node — header, refcount table, refcount blocks counting every cluster the
 * layout uses, L1 table, and with preallocation the L2 tables and data
 * clusters — and writes it through the node's I/O context.
 */
import * as fs from 'node:fs';
import { strerror } from '../../../common/errno';
import type { CreateContext } from '../../global-state/driver-gs';
import type { BlockNode } from '../../global-state/block-node';
import { QmpError } from '../../../qmp/errors';
import { COMPAT_LAZY_REFCOUNTS, EXT, geometry, HDR, l1EntriesFor, OFLAG_COPIED, QCOW2_MAGIC, setRefcount, V2_HEADER_LENGTH } from './common';

const FEATURES: Array<[number, number, string]> = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

/** Header length qbd writes for v3: the compression type byte, padded to 8. */
const V3_CREATE_HEADER_LENGTH = 112;

interface CreateOptions {
  size: number;
  version: 2 | 3;
  clusterSize: number;
  refcountBits: number;
  lazyRefcounts: boolean;
  backingFile?: string;
  backingFmt?: string;
  preallocation: 'off' | 'metadata' | 'falloc' | 'full';
}

function parseOptions(o: Record<string, unknown>): CreateOptions {
  if (o.encrypt !== undefined) throw QmpError.generic('Encrypted qcow2 images are not supported');
  if (o['data-file'] !== undefined || o['data-file-raw'] === true) throw QmpError.generic('qcow2 images with an external data file are not supported');
  if (o['extended-l2'] === true) throw QmpError.generic('qcow2 images with extended L2 entries are not supported');
  if (o['compression-type'] === 'zstd') throw QmpError.generic('zstd compression of qcow2 images is not supported');
  const version = o.version === 'v2' ? 2 : 3;
  const size = Number(o.size);
  if (!Number.isSafeInteger(size) || size < 0) throw QmpError.generic('Invalid image size');
  if (size % 512 !== 0) throw QmpError.generic('Image size must be a multiple of 512 bytes');
  const clusterSize = Number(o['cluster-size'] ?? 65536);
  if (!(clusterSize >= 512 && clusterSize <= 2 * 1024 * 1024 && (clusterSize & (clusterSize - 1)) === 0)) {
    throw QmpError.generic('Cluster size must be a power of two between 512 and 2048k');
  }
  const refcountBits = Number(o['refcount-bits'] ?? 16);
  if (!(refcountBits >= 1 && refcountBits <= 64 && (refcountBits & (refcountBits - 1)) === 0)) {
    throw QmpError.generic('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw QmpError.generic('Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  }
  const lazyRefcounts = o['lazy-refcounts'] === true;
  if (version < 3 && lazyRefcounts) {
    throw QmpError.generic('Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  const preallocation = (o.preallocation ?? 'off') as CreateOptions['preallocation'];
  const out: CreateOptions = { size, version, clusterSize, refcountBits, lazyRefcounts, preallocation };
  if (o['backing-file'] !== undefined) {
    out.backingFile = String(o['backing-file']);
    if (preallocation !== 'off') throw QmpError.generic('Backing file and preallocation can only be used at the same time if extended_l2 is on');
    if (Buffer.byteLength(out.backingFile) > 1023) throw QmpError.generic('Backing file name too long');
  }
  if (o['backing-fmt'] !== undefined) {
    if (out.backingFile === undefined) throw QmpError.generic('Backing format cannot be used without backing file');
    out.backingFmt = String(o['backing-fmt']);
  }
  return out;
}

function extension(type: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + ((data.length + 7) & ~7));
  b.writeUInt32BE(type, 0);
  b.writeUInt32BE(data.length, 4);
  data.copy(b, 8);
  return b;
}

/** The first cluster: header, extensions, backing file name. */
function headerCluster(o: CreateOptions, layout: Layout): Buffer {
  const cs = o.clusterSize;
  const buf = Buffer.alloc(cs);
  const headerLength = o.version >= 3 ? V3_CREATE_HEADER_LENGTH : V2_HEADER_LENGTH;
  buf.writeUInt32BE(QCOW2_MAGIC, HDR.magic);
  buf.writeUInt32BE(o.version, HDR.version);
  buf.writeUInt32BE(Math.log2(cs), HDR.clusterBits);
  buf.writeBigUInt64BE(BigInt(o.size), HDR.size);
  buf.writeUInt32BE(layout.l1Entries, HDR.l1Size);
  buf.writeBigUInt64BE(BigInt(layout.l1Entries ? layout.l1Cluster * cs : 0), HDR.l1TableOffset);
  buf.writeBigUInt64BE(BigInt(layout.reftableCluster * cs), HDR.refcountTableOffset);
  buf.writeUInt32BE(layout.reftableClusters, HDR.refcountTableClusters);
  if (o.version >= 3) {
    buf.writeBigUInt64BE(o.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n, HDR.compatibleFeatures);
    buf.writeUInt32BE(Math.log2(o.refcountBits), HDR.refcountOrder);
    buf.writeUInt32BE(headerLength, HDR.headerLength);
  }
  const exts: Buffer[] = [];
  if (o.backingFmt !== undefined) exts.push(extension(EXT.BACKING_FORMAT, Buffer.from(o.backingFmt)));
  if (o.version >= 3) {
    const table = Buffer.alloc(48 * FEATURES.length);
    FEATURES.forEach(([kind, bit, name], i) => {
      table[i * 48] = kind;
      table[i * 48 + 1] = bit;
      table.write(name, i * 48 + 2, 46, 'latin1');
    });
    exts.push(extension(EXT.FEATURE_TABLE, table));
  }
  exts.push(Buffer.alloc(8));
  const all = Buffer.concat(exts);
  if (headerLength + all.length > cs) throw QmpError.generic('Header extensions do not fit in the first cluster');
  all.copy(buf, headerLength);
  if (o.backingFile !== undefined) {
    const name = Buffer.from(o.backingFile);
    const at = headerLength + all.length;
    if (at + name.length > cs) throw QmpError.generic('Backing file name too long');
    name.copy(buf, at);
    buf.writeBigUInt64BE(BigInt(at), HDR.backingFileOffset);
    buf.writeUInt32BE(name.length, HDR.backingFileSize);
  }
  return buf;
}

interface Layout {
  reftableCluster: number;
  reftableClusters: number;
  refblockCluster: number;
  refblocks: number;
  l1Cluster: number;
  l1Entries: number;
  l1Clusters: number;
  /** First L2 table (preallocation), then the data clusters after all L2 tables. */
  l2Cluster: number;
  l2Tables: number;
  dataCluster: number;
  dataClusters: number;
  /** Clusters in use. */
  total: number;
}

function layoutFor(o: CreateOptions): Layout {
  const g = geometry(Math.log2(o.clusterSize), Math.log2(o.refcountBits));
  const cs = o.clusterSize;
  const l1Entries = l1EntriesFor(o.size, g);
  const l1Clusters = Math.ceil((l1Entries * 8) / cs);
  const prealloc = o.preallocation !== 'off';
  const l2Tables = prealloc ? l1Entries : 0;
  const dataClusters = prealloc ? Math.ceil(o.size / cs) : 0;
  let reftableClusters = 1;
  let refblocks = 1;
  for (;;) {
    const total = 1 + reftableClusters + refblocks + l1Clusters + l2Tables + dataClusters;
    const needBlocks = Math.ceil(total / g.refcountBlockEntries);
    const needTable = Math.ceil((needBlocks * 8) / cs);
    if (needBlocks <= refblocks && needTable <= reftableClusters) break;
    refblocks = Math.max(refblocks, needBlocks);
    reftableClusters = Math.max(reftableClusters, needTable);
  }
  const reftableCluster = 1;
  const refblockCluster = reftableCluster + reftableClusters;
  const l1Cluster = refblockCluster + refblocks;
  const l2Cluster = l1Cluster + l1Clusters;
  const dataCluster = l2Cluster + l2Tables;
  return {
    reftableCluster,
    reftableClusters,
    refblockCluster,
    refblocks,
    l1Cluster,
    l1Entries,
    l1Clusters,
    l2Cluster,
    l2Tables,
    dataCluster,
    dataClusters,
    total: dataCluster + dataClusters,
  };
}

/** Where a fresh image goes: an open file node, or a file created at a path. */
interface ImageSink {
  truncate(length: number, preallocation: 'off' | 'falloc' | 'full'): Promise<void>;
  write(offset: number, data: Buffer): Promise<void>;
  flush(): Promise<void>;
}

/** Writes a fresh qcow2 image with `options` (BlockdevCreateOptionsQcow2) onto an open file node. */
export async function createQcow2(options: Record<string, unknown>, ctx: CreateContext): Promise<void> {
  const o = parseOptions(options);
  if (typeof options.file !== 'string') throw QmpError.generic("qbd's qcow2 creation needs 'file' as the name of an open node");
  const file: BlockNode = ctx.node(options.file);
  await writeImage(o, {
    async truncate(length, preallocation) {
      await ctx.request(file, { op: 'truncate', length, exact: false, preallocation });
      file.length = length;
    },
    async write(offset, data) {
      if (ctx.cancelled) throw QmpError.generic('Image creation was cancelled');
      await ctx.request(file, { op: 'write', offset, data });
    },
    async flush() {
      await ctx.request(file, { op: 'flush' });
    },
  });
}

/** Creates a qcow2 image file at `filename` (blockdev-snapshot-sync's new overlay). */
export async function createQcow2File(filename: string, options: Record<string, unknown>): Promise<void> {
  const o = parseOptions(options);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(filename, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
  } catch (err) {
    throw QmpError.generic(`Could not create '${filename}': ${strerror((err as NodeJS.ErrnoException).code)}`);
  }
  try {
    await writeImage(o, {
      truncate: (length) => fh.truncate(length),
      write: async (offset, data) => {
        await fh.write(data, 0, data.length, offset);
      },
      flush: () => fh.sync(),
    });
  } finally {
    await fh.close();
  }
}

async function writeImage(o: CreateOptions, sink: ImageSink): Promise<void> {
  const cs = o.clusterSize;
  const g = geometry(Math.log2(cs), Math.log2(o.refcountBits));
  const L = layoutFor(o);
  const write = (cluster: number, data: Buffer): Promise<void> => sink.write(cluster * cs, data);

  // Empty the file, then size it (preallocating data when asked) before the metadata goes in.
  // As QEMU lays it out, the file of an image without preallocated data ends with its L1 table.
  const end = L.dataClusters === 0 && L.l2Tables === 0 && L.l1Entries > 0 ? L.l1Cluster * cs + L.l1Entries * 8 : L.total * cs;
  const prealloc = o.preallocation === 'falloc' || o.preallocation === 'full' ? o.preallocation : 'off';
  await sink.truncate(0, 'off');
  await sink.truncate(end, prealloc);
  await write(0, headerCluster(o, L));
  const reftable = Buffer.alloc(L.reftableClusters * cs);
  for (let b = 0; b < L.refblocks; b++) reftable.writeBigUInt64BE(BigInt((L.refblockCluster + b) * cs), b * 8);
  await write(L.reftableCluster, reftable);
  for (let b = 0; b < L.refblocks; b++) {
    const block = Buffer.alloc(cs);
    const first = b * g.refcountBlockEntries;
    for (let c = first; c < Math.min(L.total, first + g.refcountBlockEntries); c++) setRefcount(block, c - first, g.refcountOrder, 1);
    await write(L.refblockCluster + b, block);
  }
  if (L.l1Clusters > 0) {
    const l1 = Buffer.alloc(L.l1Clusters * cs);
    for (let i = 0; i < L.l2Tables; i++) l1.writeBigUInt64BE(BigInt((L.l2Cluster + i) * cs) | OFLAG_COPIED, i * 8);
    // Only the entries: the rest of the table's clusters reads as zeros, and the file may end with them.
    await write(L.l1Cluster, l1.subarray(0, Math.min(l1.length, end - L.l1Cluster * cs)));
  }
  for (let t = 0; t < L.l2Tables; t++) {
    const l2 = Buffer.alloc(cs);
    for (let i = 0; i < g.l2Entries; i++) {
      const dataIndex = t * g.l2Entries + i;
      if (dataIndex >= L.dataClusters) break;
      l2.writeBigUInt64BE(BigInt((L.dataCluster + dataIndex) * cs) | OFLAG_COPIED, i * 8);
    }
    await write(L.l2Cluster + t, l2);
  }
  await sink.flush();
}
