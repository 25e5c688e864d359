/**
 * Exact NBD requests and hostile clients against qbd's export: each bad
 * request gets the protocol's error or a clean disconnect, the daemon never
 * falls over, and other clients keep being served.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toolAvailable } from '../helpers/tools';
import { PYTHON, run, startNbdDaemon, type NbdDaemon } from './support/nbd-daemon';
import { RawClient } from './support/raw-client';

const EINVAL = 22;
const NBD_REP_ERR_UNSUP = 0x80000001;
const NBD_REP_ERR_UNKNOWN = 0x80000006;
const NBD_REP_ERR_TOO_BIG = 0x80000009;

function pythonNbdAvailable(): boolean {
  if (!toolAvailable('nbdinfo')) return false;
  try {
    execFileSync(PYTHON, ['-c', 'import nbd'], { stdio: 'ignore' });
    return true;
  } catch {
    if (process.env.CI) throw new Error('the Python nbd module (python3-libnbd) is required in CI');
    return false;
  }
}

describe.skipIf(!pythonNbdAvailable())('requests sent with libnbd, checks off', () => {
  let d: NbdDaemon;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', { exports: ['type=nbd,id=e0,node-name=disk,name=ro', 'type=nbd,id=e1,node-name=disk,name=rw,writable=on'] });
  }, 20_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('gets the protocol error for every bad request and keeps serving', async () => {
    const out = JSON.parse(await run(PYTHON, [path.join(__dirname, 'support', 'probe.py'), d.uri('ro'), d.uri('rw')], 60_000));
    expect(out).toEqual({
      'read past the end': 'EINVAL',
      'read starting past the end': 'EINVAL',
      'unaligned read': 0,
      'zero-length read': 0,
      'read with an unknown flag': 'EINVAL',
      'read with FUA': 0,
      'write to a read-only export': 'EPERM',
      'trim on a read-only export': 'EPERM',
      'zero on a read-only export': 'EPERM',
      'flush on a read-only export': 0,
      cache: 0,
      'cache past the end': 'EINVAL',
      'read of 64 MiB': 'EINVAL',
      'block status past the end': 'EINVAL',
      'still serving after errors': 0,
      'write past the end': 'ENOSPC',
      'write starting past the end': 'ENOSPC',
      'zero past the end': 'ENOSPC',
      'trim past the end': 'EINVAL',
      'unaligned write': 0,
      'unaligned read back': 'abc',
      'write with FUA': 0,
      'write with an unknown flag': 'EINVAL',
      'zero with NO_HOLE': 0,
      'zero reads back as zero': true,
      trim: 0,
      'trim with FUA': 0,
      flush: 0,
      'write of 33 MiB': 'EINVAL',
      'still serving after an oversized write': 0,
      'simple replies: read': 0,
      'simple replies: read past the end': 'EINVAL',
      'simple replies: DF flag': 'EINVAL',
    });
  }, 60_000);
});

describe('hostile clients', () => {
  let d: NbdDaemon;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', { env: { QBD_NBD_HANDSHAKE_TIMEOUT_MS: '800' } });
  }, 20_000);
  afterAll(async () => {
    await d?.stop();
  });

  /** A full read through a fresh, well-behaved client: the server is still fine. */
  async function stillServing(): Promise<void> {
    const c = await RawClient.connect(d.socket);
    await c.start();
    const replies = await c.go('disk');
    expect(replies[replies.length - 1]!.type).toBe(1);
    c.request(0, 0, 4096, { handle: 7 });
    const r = await c.simpleReply(4096);
    expect(r.error).toBe(0);
    expect(r.handle).toBe(7);
    c.close();
  }

  it('drops a client that sends garbage instead of client flags', async () => {
    const c = await RawClient.connect(d.socket);
    await c.read(18);
    c.write(crypto.randomBytes(64).fill(0xff, 0, 4));
    expect(await c.waitClosed()).toBe(true);
    await stillServing();
  });

  it('drops a client whose option header has a bad magic', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    c.write(Buffer.from('this is not an option header at all'));
    expect(await c.waitClosed()).toBe(true);
    await stillServing();
  });

  it('answers an unknown option with ERR_UNSUP and goes on negotiating', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    c.sendOption(0x4242, Buffer.from('whatever'));
    expect((await c.optionReply()).type).toBe(NBD_REP_ERR_UNSUP);
    c.sendOption(3);
    const server = await c.optionReply();
    expect(server.type).toBe(2);
    expect(server.data.subarray(4, 4 + server.data.readUInt32BE(0)).toString()).toBe('disk');
    expect((await c.optionReply()).type).toBe(1);
    c.close();
  });

  it('refuses an option too long to buffer with ERR_TOO_BIG, then serves the next one', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    c.sendOption(9, Buffer.alloc(1 << 20));
    expect((await c.optionReply()).type).toBe(NBD_REP_ERR_TOO_BIG);
    const replies = await c.go('nope');
    expect(replies[0]!.type).toBe(NBD_REP_ERR_UNKNOWN);
    expect((await c.go('disk')).pop()!.type).toBe(1);
    c.close();
  });

  it('answers an unknown command with EINVAL and keeps the connection', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    await c.go('disk');
    c.request(42, 0, 512, { handle: 1 });
    expect((await c.simpleReply()).error).toBe(EINVAL);
    c.request(7, 0, 512, { handle: 2 });
    expect((await c.simpleReply()).error).toBe(EINVAL);
    c.request(0, 0, 512, { handle: 3 });
    expect((await c.simpleReply(512)).error).toBe(0);
    c.close();
  });

  it('drops a client that sends a request with a bad magic while others keep working', async () => {
    const good = await RawClient.connect(d.socket);
    await good.start();
    await good.go('disk');
    const bad = await RawClient.connect(d.socket);
    await bad.start();
    await bad.go('disk');
    bad.write(Buffer.alloc(28, 0xee));
    expect(await bad.waitClosed()).toBe(true);
    good.request(0, 0, 512, { handle: 9 });
    expect((await good.simpleReply(512)).handle).toBe(9);
    good.close();
  });

  it('survives a client that vanishes in the middle of a write payload', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    await c.go('disk');
    c.request(1, 0, 1 << 20, { handle: 1, payload: Buffer.alloc(1000, 1) });
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    await stillServing();
  });

  it('finishes pending writes before closing on NBD_CMD_DISC', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    await c.go('disk');
    const data = crypto.randomBytes(256 << 10);
    c.request(1, 1 << 20, data.length, { handle: 1, payload: data });
    c.request(2, 0, 0, { handle: 2 });
    // The write's reply still comes; then the server closes.
    expect((await c.simpleReply()).error).toBe(0);
    expect(await c.waitClosed()).toBe(true);
    const check = await RawClient.connect(d.socket);
    await check.start();
    await check.go('disk');
    check.request(0, 1 << 20, data.length, { handle: 3 });
    expect((await check.simpleReply(data.length)).data.equals(data)).toBe(true);
    check.close();
  });

  it('drops a client that does not finish negotiating in time', async () => {
    const c = await RawClient.connect(d.socket);
    await c.start();
    const t0 = Date.now();
    expect(await c.waitClosed(5000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
  });
});

describe.skipIf(!toolAvailable('nbdinfo'))('max-connections', () => {
  let d: NbdDaemon;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', { maxConnections: 1 });
  }, 20_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('refuses a client beyond the limit, and with a limit of one does not advertise multi-conn', async () => {
    const a = await RawClient.connect(d.socket);
    await a.start();
    const b = await RawClient.connect(d.socket);
    expect(await b.waitClosed()).toBe(true);
    a.close();
    await a.waitClosed();
    await new Promise((r) => setTimeout(r, 100));
    const info = JSON.parse(await run('nbdinfo', ['--json', d.uri('disk')]));
    expect(info.exports[0].can_multi_conn).toBe(false);
  });
});

describe('max-connections with an export in an iothread', () => {
  let d: NbdDaemon;
  beforeAll(async () => {
    d = await startNbdDaemon('qbd', {
      maxConnections: 1,
      before: ['--object', 'iothread,id=io0'],
      exports: ['type=nbd,id=e0,node-name=disk,name=disk,iothread=io0,fixed-iothread=on'],
    });
  }, 20_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('still counts a client served by the iothread, and frees its place when it leaves', async () => {
    const a = await RawClient.connect(d.socket);
    await a.start();
    expect((await a.go('disk')).pop()!.type).toBe(1);
    a.request(0, 0, 512, { handle: 1 });
    expect((await a.simpleReply(512)).error).toBe(0);
    const b = await RawClient.connect(d.socket);
    expect(await b.waitClosed()).toBe(true);
    a.close();
    await new Promise((r) => setTimeout(r, 200));
    const c = await RawClient.connect(d.socket);
    await c.start();
    expect((await c.go('disk')).pop()!.type).toBe(1);
    c.close();
  });
});
