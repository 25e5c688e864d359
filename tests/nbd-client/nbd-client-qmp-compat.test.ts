/**
 * blockdev-add driver=nbd in the same QMP session against qbd and
 * qemu-storage-daemon, both clients of the same qemu-nbd servers: the
 * replies (errors to the letter, file names, query output, the graph) must
 * be the same.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalise } from '../helpers/compare';
import { tempDir, type Flavour } from '../helpers/daemons';
import { qmpSession } from '../helpers/qmp-session';
import { toolAvailable } from '../helpers/tools';
import { freePort, sparseFile, startQemuNbd, type NbdServer } from './support/servers';

async function session(flavour: Flavour, steps: string[], vars: Record<string, string>): Promise<unknown[]> {
  const { replies } = await qmpSession(flavour, steps, {
    prefix: 'qbd-nbdc-compat-',
    vars,
    comparable: (reply) => normalise(reply, vars.$SRV!),
    replyTimeoutMs: 30_000,
  });
  return replies;
}

const add = (args: string): string => `{"execute":"blockdev-add","arguments":{"driver":"nbd",${args}}}`;

const STEPS = [
  add('"node-name":"n0","server":{"type":"unix","path":"$SRV/rw.sock"},"export":"exp"'),
  add('"node-name":"n1","server":{"type":"unix","path":"$SRV/nope.sock"},"export":"exp"'),
  add('"node-name":"n2","server":{"type":"unix","path":"$SRV/rw.sock"},"export":"nope"'),
  add('"node-name":"n3","server":{"type":"unix","path":"$SRV/rw.sock"}'),
  add('"node-name":"n4","server":{"type":"inet","host":"127.0.0.1","port":"1"},"export":"exp"'),
  add('"node-name":"n5","server":{"type":"unix","path":"$SRV/rw.sock"},"export":"exp","tls-creds":"tls0"'),
  add('"node-name":"n6","server":{"type":"fd","str":"3"},"export":"exp"'),
  add('"node-name":"n7","server":{"type":"unix","path":"$SRV/rw.sock"},"export":"exp","reconnect-delay":-1'),
  add('"node-name":"n8","server":{"type":"inet","host":"127.0.0.2","port":"$PORT"},"export":"exp"'),
  add('"node-name":"n9","server":{"type":"inet","host":"127.0.0.2","port":"$PORT"},"export":"exp","auto-read-only":true'),
  add('"node-name":"n10","server":{"type":"inet","host":"127.0.0.2","port":"$PORT","ipv4":true},"export":"exp","read-only":true,"reconnect-delay":3'),
  add('"node-name":"n12","server":{"type":"inet","host":"127.0.0.2","port":"$PORT"},"export":"exp","read-only":true,"x-dirty-bitmap":"qemu:dirty-bitmap:nope"'),
  add('"node-name":"n13","server":{"type":"unix","path":"$SRV/close.sock"}'),
  add('"node-name":"n14","server":{"type":"unix","path":"$SRV/garbage.sock"}'),
  add('"node-name":"n11","server":{"type":"unix","path":"$SRV/rw.sock"},"export":"exp","tls-hostname":"example.org","open-timeout":1'),
  '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r0","file":"n0"}}',
  '{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r1","file":{"driver":"nbd","server":{"type":"inet","host":"127.0.0.2","port":"$PORT"},"export":"exp"},"read-only":true}}',
  '{"execute":"query-named-block-nodes"}',
  '{"execute":"x-debug-query-block-graph"}',
  '{"execute":"blockdev-del","arguments":{"node-name":"n0"}}',
  '{"execute":"blockdev-del","arguments":{"node-name":"r0"}}',
  '{"execute":"blockdev-del","arguments":{"node-name":"n0"}}',
  '{"execute":"blockdev-del","arguments":{"node-name":"r1"}}',
  '{"execute":"query-named-block-nodes"}',
];

describe.skipIf(!toolAvailable('qemu-storage-daemon') || !toolAvailable('qemu-nbd'))('blockdev-add driver=nbd, compared with the reference', () => {
  let dir: string;
  let servers: NbdServer[] = [];
  /** Servers that are not NBD servers: one hangs up at once, one greets with something else. */
  const impostors: net.Server[] = [];
  let vars: Record<string, string>;
  beforeAll(async () => {
    dir = tempDir('qbd-nbdc-srv-');
    const rw = path.join(dir, 'rw.raw');
    const ro = path.join(dir, 'ro.raw');
    sparseFile(rw, 4 << 20);
    sparseFile(ro, 3 << 20);
    const port = await freePort('127.0.0.2');
    servers = [await startQemuNbd(rw, { socket: path.join(dir, 'rw.sock') }), await startQemuNbd(ro, { host: '127.0.0.2', port }, { readOnly: true })];
    vars = { $SRV: dir, $PORT: String(port) };
    for (const [name, greet] of [['close.sock', ''], ['garbage.sock', 'HELLO WORLD 12345678']] as const) {
      const srv = net.createServer((c) => {
        c.on('error', () => undefined);
        c.end(greet);
      });
      await new Promise<void>((r) => srv.listen(path.join(dir, name), r));
      impostors.push(srv);
    }
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    impostors.forEach((s) => s.close());
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers every step as the reference does', async () => {
    const ours = await session('qbd', STEPS, vars);
    const theirs = await session('qsd', STEPS, vars);
    for (let i = 0; i < STEPS.length; i++) expect({ step: STEPS[i], reply: ours[i] }).toEqual({ step: STEPS[i], reply: theirs[i] });
  });
});
