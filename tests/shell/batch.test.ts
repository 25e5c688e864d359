import { describe, it, expect, beforeAll, beforeEach, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { StorageDaemon, startStorageDaemon } from './support/qsd';
import { runShell } from './support/shell-process';
import { requireBuiltShell, requireTools, skipWithout } from './support/tools';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

describe.skipIf(skipWithout('qemu-storage-daemon'))('qbd shell, non-interactive, against qemu-storage-daemon', () => {
  let qsd: StorageDaemon;

  beforeAll(() => {
    requireTools('qemu-storage-daemon');
    requireBuiltShell();
  });
  beforeEach(async () => {
    qsd = await startStorageDaemon();
  });
  afterEach(async () => {
    await qsd.stop();
  });

  it('prints each reply as one JSON line and exits 0, error replies included', async () => {
    const run = await runShell([qsd.sockets[0]!], 'query-version\nno-such-command\nquery-jobs\n');
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(3);
    const [version, missing, jobs] = run.lines as Array<Record<string, any>>;
    expect(version!.return.qemu.major).toBeTypeOf('number');
    expect(missing!.error.class).toBe('CommandNotFound');
    expect(jobs).toEqual({ return: [] });
    expect(run.stderr).toMatch(/^Connected to QEMU \d+\.\d+\.\d+/);
  });

  it('prints events as JSON lines as they arrive, and wait-event waits for one', async () => {
    const image = path.join(qsd.dir, 'new.img');
    const script = [
      `blockdev-create job-id=create0 options.driver=file options.filename=${image} options.size=1M`,
      'wait-event JOB_STATUS_CHANGE id=create0 status=concluded timeout=5',
      'job-dismiss id=create0',
    ].join('\n');
    const run = await runShell(['-e', qsd.sockets[0]!], `${script}\n`);
    expect(run.code).toBe(0);
    const statuses = (run.lines as Array<Record<string, any>>)
      .filter((line) => line.event === 'JOB_STATUS_CHANGE')
      .map((line) => line.data.status);
    expect(statuses).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    expect(fs.statSync(image).size).toBe(1048576);
  });

  it('fails wait-event after its timeout, and -e turns that into exit status 1', async () => {
    const run = await runShell(['-e', qsd.sockets[0]!], 'wait-event BLOCK_JOB_READY timeout=0.2\nquery-version\n');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('line 1: timed out waiting for BLOCK_JOB_READY');
    expect(run.lines).toHaveLength(0);
  });

  it('types values from the schema: a job named 1 is sent as a string', async () => {
    const run = await runShell([qsd.sockets[0]!], 'block-job-set-speed device=1 speed=100\n');
    expect(run.lines).toEqual([{ error: { class: 'DeviceNotActive', desc: "Block job '1' not found" } }]);
  });

  it('guesses like qmp-shell with --no-schema, so the same line sends a number', async () => {
    const run = await runShell(['--no-schema', qsd.sockets[0]!], 'block-job-set-speed device=1 speed=100\n');
    expect((run.lines[0] as Record<string, any>).error.desc).toContain("'device', expected: string");
  });

  it('keeps a node named true a string, and converts size suffixes and on/off', async () => {
    const run = await runShell(
      ['-e', qsd.sockets[0]!],
      'blockdev-add driver=null-co node-name=true size=2M read-only=on\nquery-named-block-nodes flat=true\n',
    );
    expect(run.code).toBe(0);
    const nodes = (run.lines[1] as Record<string, any>).return as Array<Record<string, any>>;
    expect(nodes.map((node) => [node['node-name'], node.image['virtual-size'], node.ro])).toEqual([['true', 2097152, true]]);
  });

  it('stops at the first error reply with -e and exits 1', async () => {
    const run = await runShell(['-e', qsd.sockets[0]!], 'query-jobs\nblockdev-del node-name=missing\nquery-version\n');
    expect(run.code).toBe(1);
    expect(run.lines).toHaveLength(2);
    expect((run.lines[1] as Record<string, any>).error.class).toBe('GenericError');
  });

  it('reports a line it cannot parse on stderr and goes on without -e', async () => {
    const run = await runShell([qsd.sockets[0]!], 'block-job-set-speed device=j speed=fast\nquery-jobs\n');
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("line 1: Error while parsing command line: 'speed' expects an integer, got 'fast'");
    expect(run.lines).toEqual([{ return: [] }]);
  });

  it('exits 1 on a line it cannot parse with -e', async () => {
    const run = await runShell(['-e', qsd.sockets[0]!], 'query-jobs lonely-word\nquery-jobs\n');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("Expected a key=value pair, got 'lonely-word'");
    expect(run.lines).toHaveLength(0);
  });

  it('reads a script file given with -f, with comments, multi-line JSON and a transaction', async () => {
    const script = path.join(qsd.dir, 'script.qmp');
    fs.writeFileSync(
      script,
      [
        '# set up a node and a bitmap in one transaction',
        'blockdev-add driver=null-co node-name=disk0 size=1M',
        'transaction(',
        'block-dirty-bitmap-add node=disk0 name=b0 granularity=64k',
        'block-dirty-bitmap-add node=disk0 name=b1',
        ')',
        '{"execute": "query-named-block-nodes",',
        ' "arguments": {"flat": true},',
        ' "id": "nodes"}',
        '',
      ].join('\n'),
    );
    const run = await runShell(['-e', '-f', script, qsd.sockets[0]!], '');
    expect(run.code).toBe(0);
    expect(run.lines.slice(0, 2)).toEqual([{ return: {} }, { return: {} }]);
    const nodes = run.lines[2] as Record<string, any>;
    expect(nodes.id).toBe('nodes');
    const bitmaps = nodes.return[0]['dirty-bitmaps'] as Array<Record<string, any>>;
    expect(bitmaps.map((bitmap) => [bitmap.name, bitmap.granularity]).sort()).toEqual([
      ['b0', 65536],
      ['b1', 65536],
    ]);
  });

  it('echoes what it sends with -v and pretty-prints with -p', async () => {
    const run = await runShell(['-v', '-p', qsd.sockets[0]!], 'query-jobs\n');
    expect(run.stdout).toBe('{\n    "arguments": {},\n    "execute": "query-jobs"\n}\n{\n    "return": []\n}\n');
  });

  it('logs each command merged with its reply, and events, with -l', async () => {
    const log = path.join(qsd.dir, 'session.log');
    const image = path.join(qsd.dir, 'log.img');
    await runShell(
      ['-l', log, qsd.sockets[0]!],
      `query-jobs\nblockdev-create job-id=c options.driver=file options.filename=${image} options.size=4k\n` +
        'wait-event JOB_STATUS_CHANGE id=c status=concluded timeout=5\n',
    );
    const entries = fs
      .readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(entries[0]).toEqual({ execute: 'query-jobs', arguments: {}, return: [] });
    expect(entries.some((entry) => entry.execute === 'blockdev-create' && 'return' in entry)).toBe(true);
    expect(entries.some((entry) => entry.event === 'JOB_STATUS_CHANGE')).toBe(true);
  });

  it('gives the reply of a raw JSON line the id the user chose', async () => {
    const run = await runShell([qsd.sockets[0]!], '{"execute": "query-jobs", "id": {"mine": [1]}}\n');
    expect(run.lines).toEqual([{ return: [], id: { mine: [1] } }]);
  });

  it('uses QMP_SOCKET when no address is given', async () => {
    const run = await runShell([], 'query-jobs\n', { QMP_SOCKET: qsd.sockets[1]! });
    expect(run.code).toBe(0);
    expect(run.lines).toEqual([{ return: [] }]);
  });

  it('prints Disconnected and exits 1 when the server goes away mid-script', async () => {
    const run = await runShell([qsd.sockets[0]!], 'quit\nquery-jobs\nquery-jobs\n');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('Disconnected');
  });
});

describe.skipIf(skipWithout('qemu-storage-daemon'))('qbd shell over TCP', () => {
  beforeAll(() => {
    requireTools('qemu-storage-daemon');
    requireBuiltShell();
  });

  it('connects to HOST:PORT', async () => {
    const port = await freePort();
    const qsd = await startStorageDaemon({
      monitors: 1,
      extraChardevs: [`socket,host=127.0.0.1,port=${port},server=on,wait=off`],
    });
    try {
      const run = await runShell([`127.0.0.1:${port}`], 'query-jobs\n');
      expect(run.code).toBe(0);
      expect(run.lines).toEqual([{ return: [] }]);
    } finally {
      await qsd.stop();
    }
  });
});
