/**
 * The same QMP sessions against qbd and qemu-storage-daemon; the replies must
 * match structurally, error classes and descriptions to the letter.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff } from '../helpers/compare';
import { startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

interface Step {
  /** A raw line sent as is. */
  send: string;
  /** Compare return values exactly, not only their shape. */
  exact?: boolean;
}

/** Runs `lines` (with `$DIR` replaced) on a fresh daemon and returns the normalised replies, one per line. */
async function session(flavour: 'qbd' | 'qsd', steps: Step[], prepare?: (dir: string) => void): Promise<unknown[]> {
  const dir = tempDir(`qbd-compat-${flavour}-`);
  prepare?.(dir);
  let daemon: RunningDaemon | undefined;
  try {
    daemon = await startDaemon(flavour, [], { dir });
    const c = await daemon.connect();
    const replies: unknown[] = [normalise({ QMP: c.greeting.QMP }, dir)];
    for (const step of steps) {
      c.sendRaw(step.send.split('$DIR').join(dir));
      replies.push(normalise(await c.next(), dir));
    }
    c.close();
    return replies;
  } finally {
    await daemon?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function images(dir: string): void {
  fs.writeFileSync(path.join(dir, 'disk.raw'), Buffer.alloc(0));
  fs.truncateSync(path.join(dir, 'disk.raw'), 1 << 20);
}

const NEGOTIATION: Step[] = [
  { send: '{"execute":"query-version","id":1}' },
  { send: '{"execute":"nope"}' },
  { send: '{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}' },
  { send: '{"execute":"qmp_capabilities","id":"x"}' },
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"nope","id":[1,2]}' },
  { send: '{"execute":"query-version","id":{"a":1}}' },
  { send: '{"exec":"query-version"}' },
  { send: '[1,2]' },
  { send: '{"execute":1}' },
  { send: '{"id":1}' },
  { send: '{"execute":"query-version","control":{}}' },
  { send: '{"execute":"query-version","arguments":[]}' },
  { send: '{"execute":"query-version","arguments":{"x":1}}' },
  { send: '{"exec-oob":"query-version","id":7}' },
  { send: '{"execute":"query-version","id":1,"exec-oob":"query-version"}' },
  { send: '{"execute":"quit","arguments":null}' },
  { send: '{"execute":"x-debug-query-block-graph","arguments":{"a":1,"b":2}}' },
  { send: '{"execute":"query-version","arguments":{"x":1,"y":2,"zz":3,"abc":4,"b":5,"a":6,"size":7,"driver":8,"file":9}}' },
];

const OOB: Step[] = [
  { send: '{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}' },
  { send: '{"exec-oob":"query-version","id":1}' },
  { send: '{"exec-oob":"qmp_capabilities","id":2}' },
  { send: '{"execute":"query-version","id":3,"exec-oob":"x"}' },
  { send: '{"exec-oob":"nope","id":4}' },
];

const BLOCKDEV: Step[] = [
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"blockdev-add","arguments":{}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"foo"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":"x"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1.5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1024,"bogus":1}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","read-zeroes":"yes"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","cache":{"direct":1}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","cache":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","discard":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"bogus":2,"node-name":5,"driver":"null-co"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"bad name"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"#x"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1024}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1024}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a","file":{"driver":"file"}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a","file":{"driver":"file","filename":"/x","bogus":1}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a","file":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a","file":null}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"a","file":{}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r3","file":"nonexist"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r0","file":"n0"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"n0"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"zz"}}' },
  { send: '{"execute":"query-named-block-nodes","arguments":{"flat":true}}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f1","filename":"$DIR/nonexist/x"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f1","filename":"$DIR/disk.raw"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f2","filename":"$DIR/disk.raw","detect-zeroes":"unmap"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"rr","offset":512,"size":1024,"read-only":true,"file":{"driver":"file","filename":"$DIR/disk.raw","node-name":"ff"}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r2","offset":1048576,"size":1048577,"file":"ff"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r2","offset":4096,"file":"ff"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"nn","read-zeroes":true,"latency-ns":1000,"detect-zeroes":"unmap","discard":"unmap","cache":{"direct":true,"no-flush":true}}}' },
  { send: '{"execute":"query-named-block-nodes"}', exact: true },
  { send: '{"execute":"x-debug-query-block-graph"}', exact: true },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"ff"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"r2"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"rr"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"ff"}}' },
  { send: '{"execute":"query-named-block-nodes"}', exact: true },
];

const OBJECTS: Step[] = [
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"iothread","id":"io0"}}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"iothread","id":"io0"}}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"iothread","id":"io1","poll-max-ns":5}}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"bogus","id":"io2"}}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"iothread","id":"x","poll-max-ns":-1}}' },
  { send: '{"execute":"object-add","arguments":{"qom-type":"iothread","id":"bad id"}}' },
  { send: '{"execute":"object-del","arguments":{"id":"nope"}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n1","size":1048576}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"n1","iothread":"io0"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"n1","iothread":null}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"n1","iothread":"zz"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"zz","iothread":"io0"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"n1","iothread":5}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r1","file":"n1"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"n1","iothread":"io1"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"r1","iothread":"io1"}}' },
  { send: '{"execute":"query-named-block-nodes"}', exact: true },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"r1","iothread":null}}' },
  { send: '{"execute":"object-del","arguments":{"id":"io1"}}' },
  { send: '{"execute":"object-del","arguments":{"id":"io0"}}' },
];

const BUSY_NODES: Step[] = [
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"src","size":1073741824,"latency-ns":100000000}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"dst","size":1073741824}}' },
  { send: '{"execute":"blockdev-mirror","arguments":{"job-id":"m1","device":"src","target":"dst","sync":"full","speed":1024}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"src"}}' },
  { send: '{"execute":"blockdev-del","arguments":{"node-name":"dst"}}' },
  { send: '{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"dst","iothread":null}}' },
  { send: '{"execute":"block-job-cancel","arguments":{"device":"m1","force":true}}' },
];

const RESIZE: Step[] = [
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n"}}' },
  { send: '{"execute":"block_resize","arguments":{"node-name":"n","size":1048576}}' },
  { send: '{"execute":"block_resize","arguments":{"node-name":"zz","size":1048576}}' },
  { send: '{"execute":"block_resize","arguments":{"size":1048576}}' },
  { send: '{"execute":"block_resize","arguments":{"node-name":"n","size":-1}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"$DIR/disk.raw","node-name":"rf"}}}' },
  { send: '{"execute":"block_resize","arguments":{"node-name":"r","size":2097152}}' },
  { send: '{"execute":"block_resize","arguments":{"node-name":"r","size":1000}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"w","offset":0,"size":4096,"file":"rf"}}' },
  { send: '{"execute":"block_resize","arguments":{"device":"r","size":4194304}}' },
  { send: '{"execute":"query-named-block-nodes"}', exact: true },
];

const SCRIPTS: Record<string, Step[]> = { negotiation: NEGOTIATION, oob: OOB, blockdev: BLOCKDEV, objects: OBJECTS, 'busy nodes': BUSY_NODES, resize: RESIZE };

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('qbd answers like qemu-storage-daemon', () => {
  const results: Record<string, { ours: unknown[]; theirs: unknown[] }> = {};

  beforeAll(async () => {
    for (const [name, steps] of Object.entries(SCRIPTS)) {
      const [ours, theirs] = await Promise.all([session('qbd', steps, images), session('qsd', steps, images)]);
      results[name] = { ours, theirs };
    }
  });

  afterAll(() => undefined);

  for (const [name, steps] of Object.entries(SCRIPTS)) {
    it(`gives the reference's replies in the ${name} session`, () => {
      const { ours, theirs } = results[name]!;
      expect(ours).toHaveLength(theirs.length);
      const diffs = ours.flatMap((reply, i) => {
        const step = steps[i - 1];
        const d = structuralDiff(reply, theirs[i], '$', step?.exact === true);
        return d.length ? [`after ${step?.send ?? 'connect'}:\n  ${d.join('\n  ')}`] : [];
      });
      expect(diffs.join('\n')).toBe('');
    });
  }
});
