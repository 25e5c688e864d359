import { describe, it, expect } from 'vitest';
import { EventRecord } from '../../src/shell/event-record';
import { QmpEvent } from '../../src/shell/qmp-client';

function jobEvent(id: string, status: string): QmpEvent {
  return { event: 'JOB_STATUS_CHANGE', data: { id, status } };
}

const connected = (): boolean => false;

describe('EventRecord', () => {
  it('finds a matching event that arrived before the wait started', async () => {
    const record = new EventRecord();
    record.record(jobEvent('a', 'running'));
    record.record(jobEvent('a', 'concluded'));
    expect(await record.waitFor(['JOB_STATUS_CHANGE', 'id=a', 'status=concluded'], connected)).toEqual(
      jobEvent('a', 'concluded'),
    );
  });

  it('does not find the same event twice', async () => {
    const record = new EventRecord();
    record.record(jobEvent('a', 'concluded'));
    await record.waitFor(['JOB_STATUS_CHANGE'], connected);
    expect(await record.waitFor(['JOB_STATUS_CHANGE', 'timeout=0'], connected)).toBe(
      'timed out waiting for JOB_STATUS_CHANGE',
    );
  });

  it('waits for an event that arrives later', async () => {
    const record = new EventRecord();
    const waiting = record.waitFor(['JOB_STATUS_CHANGE', 'status=null', 'timeout=5'], connected);
    setTimeout(() => record.record(jobEvent('b', 'running')), 10);
    setTimeout(() => record.record(jobEvent('b', 'null')), 20);
    expect(await waiting).toEqual(jobEvent('b', 'null'));
  });

  it('matches nested data with dotted keys and non-string values', async () => {
    const record = new EventRecord();
    record.record({ event: 'X', data: { node: { name: 'n0', size: 4096, ok: true } } });
    expect(await record.waitFor(['X', 'node.name=n0', 'node.size=4096', 'node.ok=true', 'timeout=0'], connected)).toMatchObject({
      event: 'X',
    });
  });

  it('stops waiting when aborted', async () => {
    const controller = new AbortController();
    const waiting = new EventRecord().waitFor(['NEVER', 'timeout=5'], connected, controller.signal);
    setTimeout(() => controller.abort(), 10);
    expect(await waiting).toBe('stopped waiting for NEVER');
  });

  it('rejects a bad timeout and a missing event name', async () => {
    const record = new EventRecord();
    expect(await record.waitFor(['X', 'timeout=soon'], connected)).toBe("bad timeout 'soon'");
    expect(await record.waitFor([], connected)).toBe('wait-event needs an event name');
  });
});
