/**
 * The same QMP sessions against qbd and qemu-storage-daemon; the replies must
 * match structurally, error classes and descriptions to the letter.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise, structuralDiff } from '../helpers/compare';
import { QBD, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemons';
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
  { send: '{"execute":"query-commands"}', exact: true },
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

const CHILD_CHANGE: Step[] = [
  { send: '{"execute":"qmp_capabilities"}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"$DIR/disk.raw","node-name":"f"}}}' },
  { send: '{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r","child":"file","node":"n"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"nope","node":"n"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r","node":"nope"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r","child":"nope"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r","child":"file"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"r","node":"n"}}' },
  { send: '{"execute":"x-blockdev-change","arguments":{"parent":"f","child":"file"}}' },
  { send: '{"execute":"query-named-block-nodes","arguments":{"flat":true}}', exact: true },
];

const SCRIPTS: Record<string, Step[]> = {
  negotiation: NEGOTIATION,
  oob: OOB,
  blockdev: BLOCKDEV,
  objects: OBJECTS,
  'busy nodes': BUSY_NODES,
  resize: RESIZE,
  'child change': CHILD_CHANGE,
};

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

/**
 * Arguments the input visitor refuses below the top level: missing members,
 * wrong types, enum values it does not know and unexpected members, inside
 * structs, lists, flat unions, alternates, transaction actions and
 * object-add's flattened properties. Each is one command's arguments.
 */
const NESTED_QMP: Array<[command: string, args: Record<string, unknown>]> = [
  // object-add: the properties sit beside qom-type and id.
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x' }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'allow' }, { match: 'y' }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'bad' }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'allow', format: 'bad' }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 5, policy: 'allow' }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [{ match: 'x', policy: 'allow', zz: 1, yy: 2 }] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: [5] }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', rules: 5 }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', policy: 'bad' }],
  ['object-add', { 'qom-type': 'authz-list', id: 'a', policy: 5 }],
  ['object-add', { 'qom-type': 'iothread', id: 'x', 'poll-max-ns': 1.5 }],
  ['object-add', { 'qom-type': 'iothread', id: 'x', 'poll-max-ns': 'x', zz: 1 }],
  ['object-add', { 'qom-type': 'tls-creds-x509', id: 'a', endpoint: 'bad' }],
  ['object-add', { 'qom-type': 'tls-creds-x509', id: 'a', 'verify-peer': 'x' }],
  ['object-add', { 'qom-type': 'authz-simple' }],
  // blockdev-add: flat unions at depth 1, 2 and 3, and alternates.
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file' } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 'x', aio: 'bad' } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 'x', aio: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 'x', zz: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', zz: 1, yy: 2 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'bad', filename: 'x' } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: {} }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', cache: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', size: 1.5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', 'latency-ns': 'x' } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', 'latency-ns': 1.5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'null-co', 'detect-zeroes': 'bad' } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'file', filename: 'x', cache: { direct: 5 } } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: { driver: 'file' } } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: { driver: 'file', aio: 'bad', filename: 'x' } } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: { driver: 'file', filename: 'x', cache: { direct: 5 } } } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: { driver: 'file', filename: 'x', cache: { direct: true, zz: 1 } } } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: 5 } }],
  ['blockdev-add', { driver: 'raw', 'node-name': 'a', file: { driver: 'raw', file: [] } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', backing: 5 }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', backing: { driver: 'raw' } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', backing: { driver: 'raw', file: { driver: 'file' } } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', encrypt: { format: 'bad' } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', 'overlap-check': 5 }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', 'overlap-check': 'bad' }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', 'overlap-check': { template: 'bad' } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', 'overlap-check': { zz: 1 } }],
  ['blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: 'x', 'overlap-check': { 'active-l1': 5 } }],
  // transaction: a list of simple-union actions with their data one level down.
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { name: 'b' } }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 5, name: 'b' } }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b', zz: 1 } }] }],
  ['transaction', { actions: [{ type: 'bad', data: {} }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add' }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b' } }, { type: 'blockdev-backup', data: { device: 'n', target: 't', sync: 'bad' } }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b' } }], properties: { 'completion-mode': 'bad' } }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b', granularity: -1 } }] }],
  ['transaction', { actions: [{ type: 'block-dirty-bitmap-add', data: { node: 'n', name: 'b', granularity: 'x' } }] }],
  ['transaction', { actions: [5] }],
  // Unsigned members read through QEMU's uint64 visitor, at the top level too.
  ['block-dirty-bitmap-add', { node: 'n', name: 'b', granularity: 'x' }],
  ['block-dirty-bitmap-add', { node: 'n', name: 'b', granularity: 1.5 }],
  ['block-dirty-bitmap-add', { node: 'n', name: 'b', granularity: -1 }],
  ['blockdev-create', { 'job-id': 'j', options: { driver: 'file', filename: 'x', size: 'x' } }],
  ['blockdev-create', { 'job-id': 'j', options: { driver: 'qcow2', file: 'x', size: 1, 'cluster-size': 1.5 } }],
  ['nbd-server-start', { addr: { type: 'unix', data: { path: 'x' } }, 'max-connections': -1 }],
  ['nbd-server-start', { addr: { type: 'unix', data: { path: 'x' } }, 'max-connections': 'x' }],
  // Lists of alternates, and a union under a union.
  ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', bitmaps: ['a', 5] }],
  ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', bitmaps: ['a', { node: 'n' }] }],
  ['block-export-add', { type: 'nbd', id: 'e', 'node-name': 'n', bitmaps: ['a', { node: 'n', name: 5 }] }],
  ['nbd-server-start', { addr: { type: 'inet', data: { host: 'x' } } }],
  ['nbd-server-start', { addr: { type: 'inet', data: { host: 'x', port: '1', ipv4: 'x' } } }],
  ['nbd-server-start', { addr: { type: 'bad' } }],
  ['nbd-server-start', { addr: { type: 'unix', data: { path: 'x', zz: 1 } } }],
];

/** The same arguments as command-line options: key=value syntax (list elements `.0`) and JSON. */
const NESTED_OPTIONS: string[][] = [
  ['--blockdev', 'driver=raw,node-name=a,file.driver=file'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=file,file.filename=x,file.aio=bad'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=file,file.filename=x,file.zz=1'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=bad'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=raw,file.file.driver=file'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=raw,file.file.driver=file,file.file.filename=x,file.file.cache.direct=x'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=raw,file.file.driver=file,file.file.filename=x,file.file.cache.zz=1'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=null-co,file.size=x'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=null-co,file.latency-ns=x'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=null-co,file.cache=x'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=null-co,file.read-zeroes=x'],
  ['--blockdev', 'driver=raw,node-name=a,file.driver=null-co,file.detect-zeroes=bad'],
  ['--blockdev', 'driver=qcow2,node-name=a,file=x,overlap-check.template=bad'],
  ['--blockdev', 'driver=qcow2,node-name=a,file=x,overlap-check=bad'],
  ['--blockdev', 'driver=qcow2,node-name=a,file=x,overlap-check.zz=1'],
  ['--blockdev', 'driver=qcow2,node-name=a,file=x,l2-cache-entry-size=x'],
  ['--object', 'authz-list,id=a,rules.0.match=x'],
  ['--object', 'authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.1.match=y'],
  ['--object', 'authz-list,id=a,rules.0.match=x,rules.0.policy=bad'],
  ['--object', 'authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.zz=1'],
  ['--object', 'authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=bad'],
  ['--object', 'authz-list,id=a,rules=x'],
  ['--object', 'authz-list,id=a,rules.0=x'],
  ['--object', 'authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=glob,rules.1=y'],
  ['--object', 'iothread,id=x,poll-max-ns=x'],
  ['--object', 'iothread,id=x,zz=1'],
  ['--object', 'tls-creds-x509,id=a,endpoint=bad'],
  ['--object', 'tls-creds-x509,id=a,verify-peer=x'],
  ['--nbd-server', 'addr.type=inet,addr.host=x'],
  ['--nbd-server', 'addr.type=inet,addr.host=x,addr.port=1,addr.ipv4=x'],
  ['--nbd-server', 'addr.type=bad'],
  ['--nbd-server', 'addr.type=unix,addr.path=x,addr.zz=1'],
  ['--nbd-server', 'addr.type=unix,addr.path=x,max-connections=-1'],
  ['--nbd-server', 'addr.type=unix,addr.path=x,max-connections=x'],
  ['--nbd-server', 'addr.type=unix,addr.path=x,max-connections=99999999999'],
  ['--export', 'type=nbd,id=e,node-name=n,bitmaps.0=a,bitmaps.1.node=n'],
  ['--export', 'type=nbd,id=e,node-name=n,bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.0.zz=1'],
  ['--blockdev', '{"driver":"raw","node-name":"a","file":{"driver":"file"}}'],
  ['--blockdev', '{"driver":"raw","node-name":"a","file":{"driver":"file","filename":"x","aio":"bad"}}'],
  ['--blockdev', '{"driver":"raw","node-name":"a","file":{"driver":"null-co","latency-ns":"x"}}'],
  ['--object', '{"qom-type":"authz-list","id":"a","rules":[{"match":"x"}]}'],
  ['--object', '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"bad"}]}'],
  ['--object', '{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","zz":1}]}'],
];

interface Refusal {
  status: number | null;
  stderr: string;
}

/** Runs a daemon with `argv` alone, expecting it to refuse them; its program name is left out of the message. */
function refusal(flavour: 'qbd' | 'qsd', argv: string[]): Promise<Refusal> {
  const [file, args, name] = flavour === 'qbd' ? [process.execPath, [QBD, ...argv], 'qbd'] : ['qemu-storage-daemon', argv, 'qemu-storage-daemon'];
  return new Promise((resolve) => {
    // One that accepted its options keeps running: the kill makes that a visible mismatch.
    execFile(file, args, { timeout: 15_000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      const status = err ? ((err as { code?: unknown }).code as number | null) : 0;
      resolve({ status: typeof status === 'number' ? status : null, stderr: stderr.split(`${name}: `).join('<daemon>: ') });
    });
  });
}

describe.skipIf(!toolAvailable('qemu-storage-daemon'))('nested argument errors are worded like qemu-storage-daemon', () => {
  const replies: Record<'qbd' | 'qsd', unknown[]> = { qbd: [], qsd: [] };
  const refusals: Record<'qbd' | 'qsd', Refusal[]> = { qbd: [], qsd: [] };

  beforeAll(async () => {
    const steps = [{ send: '{"execute":"qmp_capabilities"}' }, ...NESTED_QMP.map(([execute, args]) => ({ send: JSON.stringify({ execute, arguments: args }) }))];
    const [ours, theirs] = await Promise.all([session('qbd', steps), session('qsd', steps)]);
    // Past the greeting and the negotiation.
    replies.qbd = ours.slice(2);
    replies.qsd = theirs.slice(2);
    for (const argv of NESTED_OPTIONS) {
      const [ours, theirs] = await Promise.all([refusal('qbd', argv), refusal('qsd', argv)]);
      refusals.qbd.push(ours);
      refusals.qsd.push(theirs);
    }
  }, 240_000);

  it.each(NESTED_QMP.map((c, i) => [i, ...c] as const))('QMP case %i: %s %j', (i) => {
    const theirs = replies.qsd[i] as { error?: { class: string; desc: string } };
    expect(theirs.error, 'the reference refuses it').toBeDefined();
    expect((replies.qbd[i] as { error?: unknown }).error).toEqual(theirs.error);
  });

  it.each(NESTED_OPTIONS.map((argv, i) => [i, argv] as const))('command-line case %i: %j', (i) => {
    const theirs = refusals.qsd[i]!;
    expect(theirs.status, 'the reference refuses it').toBe(1);
    expect(refusals.qbd[i]).toEqual(theirs);
  });
});
