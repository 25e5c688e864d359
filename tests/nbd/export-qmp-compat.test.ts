/**
 * The NBD server and export commands, in the same QMP sessions against qbd
 * and qemu-storage-daemon: replies must match structurally, errors to the
 * letter, and the events must be the same, in the same order.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { structuralDiff } from '../helpers/compare';
import type { Flavour } from '../helpers/daemons';
import { qmpSession, type QmpSessionResult } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';

interface Step {
  send: string;
  exact?: boolean;
}

function session(flavour: Flavour, steps: Step[]): Promise<QmpSessionResult> {
  return qmpSession(
    flavour,
    steps.map((s) => s.send),
    {
      prefix: 'qbd-export-compat-',
      prepare: (dir) => {
        fs.writeFileSync(path.join(dir, 'disk.raw'), Buffer.alloc(0));
        fs.truncateSync(path.join(dir, 'disk.raw'), 1 << 20);
      },
    },
  );
}

const SERVER: Step[] = [
  { send: '{"execute":"nbd-server-stop"}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"max-connections":-1}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"tls-creds":"nope"}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix"}}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"/nonexistent/dir/x.sock"}}}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"fd","data":{"str":"nope"}}}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"inet","data":{"host":"127.0.0.1","port":"nbd-nope"}}}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}}}}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}}}}' },
  { send: '{"execute":"nbd-server-stop"}' },
  { send: '{"execute":"nbd-server-stop"}' },
  { send: '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"$DIR/nbd.sock"}},"max-connections":4}}' },
];

const EXPORTS: Step[] = [
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","filename":"$DIR/disk.raw","node-name":"f"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","file":"f","node-name":"r"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"ro","read-only":true}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"r"}}' },
  ...SERVER,
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"nope"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"","node-name":"r"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"1a","node-name":"r"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"r"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"r"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e1","node-name":"r"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e1","node-name":"f","name":"w","writable":true,"description":"rw"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e2","node-name":"f","name":"x","bitmaps":["b"]}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e2","node-name":"f","name":"x","iothread":"nope"}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e2","node-name":"ro","writable":true}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e2","node-name":"ro","allocation-depth":true,"writethrough":true}}' },
  { send: '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e3","node-name":"f","name":"","bogus":1}}' },
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"r"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"ro"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"nope"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0","mode":"bogus"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0"}}' },
  { send: '{"execute":"block-export-del","arguments":{"id":"e0"}}' },
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"nbd-server-add","arguments":{"device":"r"}}' },
  { send: '{"execute":"nbd-server-add","arguments":{"device":"r","name":"r"}}' },
  { send: '{"execute":"nbd-server-remove","arguments":{"name":"r"}}' },
  { send: '{"execute":"nbd-server-remove","arguments":{"name":"r"}}' },
  { send: '{"execute":"nbd-server-add","arguments":{"device":"ro","name":"ro2","writable":true}}' },
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"nbd-server-stop"}' },
  { send: '{"execute":"query-block-exports"}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"r"}}' },
];

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('the export commands answer like qemu-storage-daemon', () => {
  it('gives the reference replies and events for server start/stop, export add/del/query and the deprecated forms', async () => {
    const [ours, theirs] = await Promise.all([session('qbd', EXPORTS), session('qsd', EXPORTS)]);
    const diffs = EXPORTS.flatMap((step, i) => structuralDiff(ours.replies[i], theirs.replies[i], `step ${i} ${step.send}`, step.exact));
    expect(diffs).toEqual([]);
    expect(ours.events).toEqual(theirs.events);
  }, 30_000);
});
