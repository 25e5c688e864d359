/**
 * Entry point of an I/O context (a worker thread). It serves the messages of
 * `block/common/io-context-protocol.ts` and hosts the services that run in
 * I/O contexts (export data paths, job copy loops), registered in
 * `context-services.ts`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Channel, Transfer } from '../../common/channel';
import { assertIoContext } from '../../common/thread-context';
import { log } from '../../common/log';
import * as proto from '../common/io-context-protocol';
import { IoError } from '../common/io-types';
import { replaceBackendRoot } from './backend';
import { WRITE_THRESHOLD_EVENT } from '../common/write-threshold';
import { setWriteThresholdReporter } from './write-threshold';
import { contextServices, type IoContextRuntime } from './context-services';
import { setDirtyBitmaps } from './dirty-tracking';
import { drainBegin, drainEnd } from './drain';
import { IoGraph } from './io-graph';
import { nodeStatsReport } from './node-stats';
import { blockStatusNode, discardNode, flushNode, readNode, truncateNode, writeNode, writeZeroesNode } from './request';

async function serveNodeRequest(graph: IoGraph, { nodeName, request: r }: { nodeName: string; request: proto.NodeRequest }): Promise<proto.NodeRequestResult | Transfer<proto.NodeRequestResult>> {
  const node = graph.get(nodeName);
  switch (r.op) {
    case 'read': {
      const buf = Buffer.allocUnsafeSlow(r.bytes);
      await readNode(node, r.offset, buf);
      return new Transfer({ data: buf }, [buf.buffer as ArrayBuffer]);
    }
    case 'write':
      await writeNode(node, r.offset, Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength), r.flags);
      return {};
    case 'write-zeroes':
      await writeZeroesNode(node, r.offset, r.bytes, r.flags);
      return {};
    case 'discard':
      await discardNode(node, r.offset, r.bytes);
      return {};
    case 'flush':
      await flushNode(node);
      return {};
    case 'block-status':
      return { status: await blockStatusNode(node, r.offset, r.bytes) };
    case 'truncate':
      return { length: await truncateNode(node, r.length, r.exact, r.preallocation) };
  }
}

async function shutdown(graph: IoGraph): Promise<void> {
  // Parents first, so a format flushes its metadata before its file child goes.
  const order = [...graph.nodes.values()].filter((n) => n.parents.size === 0);
  while (order.length > 0) {
    const node = order.shift()!;
    const children = [...node.children.values()];
    await graph.detach(node.name).catch((err: Error) => log.error({ node: node.name, err: err.message }, 'flush at shutdown failed'));
    for (const c of children) if (c.parents.size === 0 && graph.nodes.has(c.name)) order.push(c);
  }
}

function main(): void {
  assertIoContext();
  const port = parentPort;
  if (!port) throw new Error('an I/O context runs in a worker thread');
  const channel = new Channel(port);
  const graph = new IoGraph();
  const runtime: IoContextRuntime = { name: String((workerData as { name?: string } | null)?.name ?? 'default'), graph, channel };

  channel.onRequest(proto.attachNode, (desc) => graph.attach(desc));
  channel.onRequest(proto.detachNode, ({ nodeName }) => graph.detach(nodeName));
  channel.onRequest(proto.setChildren, ({ nodeName, children }) => graph.setChildren(nodeName, children));
  channel.onRequest(proto.replaceBackendRoot, ({ from, to }) => replaceBackendRoot(graph.get(from), graph.get(to)));
  channel.onRequest(proto.replaceState, ({ nodeName, state }) => {
    graph.get(nodeName).state = state;
  });
  channel.onRequest(proto.updateNode, async ({ nodeName, length, readOnly, writeThreshold }) => {
    const node = graph.get(nodeName);
    if (readOnly === true && !node.readOnly && node.driver.beforeReadOnly) {
      // A failure leaves the image as a crash would (e.g. still marked dirty); the switch goes on.
      await node.driver.beforeReadOnly(node).catch((err: Error) => log.warn({ node: nodeName, err: err.message }, 'could not settle the image before it became read-only'));
    }
    if (length !== undefined) node.length = length;
    if (readOnly !== undefined) node.readOnly = readOnly;
    if (writeThreshold !== undefined) node.writeThreshold = writeThreshold;
  });
  channel.onRequest(proto.setDirtyBitmaps, ({ nodeName, bitmaps }) => setDirtyBitmaps(graph.get(nodeName), bitmaps));
  channel.onRequest(proto.storeBitmaps, async ({ nodeName }) => {
    const node = graph.get(nodeName);
    await node.driver.storeBitmaps?.(node);
  });
  channel.onRequest(proto.internalSnapshot, async ({ nodeName, op }) => {
    const node = graph.get(nodeName);
    if (!node.driver.internalSnapshot) throw new IoError('ENOTSUP', `Driver ${node.driver.name} keeps no internal snapshots`);
    if (node.readOnly) throw new IoError('EPERM', `node ${node.name} is read-only`);
    return node.driver.internalSnapshot(node, op);
  });
  channel.onRequest(proto.nodeStats, () => [...graph.nodes.values()].map(nodeStatsReport));
  channel.onRequest(proto.drainBegin, ({ section, nodes }) => drainBegin(graph, section, nodes));
  channel.onRequest(proto.drainEnd, ({ section }) => drainEnd(section));
  channel.onRequest(proto.nodeRequest, (params) => serveNodeRequest(graph, params));
  channel.onRequest(proto.shutdownContext, () => shutdown(graph));

  setWriteThresholdReporter((node, report) => channel.notify(proto.ioEvent, { kind: WRITE_THRESHOLD_EVENT, node: node.name, data: report }));
  for (const install of contextServices) install(runtime);
}

main();
