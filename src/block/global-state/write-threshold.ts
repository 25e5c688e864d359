/**
 * block-set-write-threshold and BLOCK_WRITE_THRESHOLD: the I/O context
 * checks each write against the node's threshold (io/write-threshold.ts)
 * and reports the first one past it; here the report becomes the event and
 * the threshold goes back to 0, so one crossing gives one event.
 */
import { assertMainLoop } from '../../common/thread-context';
import { QmpError } from '../../qmp/errors';
import { emitEvent } from '../../qmp/events';
import * as proto from '../common/io-context-protocol';
import { WRITE_THRESHOLD_EVENT, type WriteThresholdReport } from '../common/write-threshold';
import { findNode } from './graph';
import { onIoEvent } from './io-context';

export async function setWriteThreshold(nodeName: string, threshold: number): Promise<void> {
  assertMainLoop();
  const node = findNode(nodeName);
  if (!node) throw QmpError.generic(`Device '${nodeName}' not found`);
  node.writeThreshold = threshold;
  if (node.attached) await node.ctx.channel.request(proto.updateNode, { nodeName, writeThreshold: threshold });
}

onIoEvent(WRITE_THRESHOLD_EVENT, (_ctx, ev) => {
  const node = ev.node === undefined ? undefined : findNode(ev.node);
  if (!node) return;
  const report = ev.data as WriteThresholdReport;
  // A threshold set again since the write crossed the old one stays.
  if (node.writeThreshold === report.threshold) node.writeThreshold = 0;
  emitEvent('BLOCK_WRITE_THRESHOLD', { 'node-name': node.name, 'amount-exceeded': report.end - report.threshold, 'write-threshold': report.threshold });
});
