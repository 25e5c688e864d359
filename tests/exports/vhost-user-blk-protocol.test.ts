/**
 * The vhost-user-blk export at the protocol level, driven by a small
 * front-end written in the test (descriptors passed over the socket, a
 * memfd as guest memory, split virtqueues laid out by hand): the same
 * conversation with qbd and with qemu-storage-daemon must get the same
 * answers, data written through a queue must be in the image, and a
 * front-end that breaks its rings is disconnected while the export keeps
 * serving.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import * as P from '../../src/exports/vhost-user-blk/protocol';
import { startDaemon, tempDir, waitFor, type Flavour, type RunningDaemon } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';
import { BlockFrontend, GUEST_BASE, MEM_SIZE, u64, vringState } from '../../bench/vhost-user-frontend';
import { closeFd, eventFd, mapShared, releaseMapping, vhostUserCallsAvailable } from '../../src/native/vhost-user';
import { writeFd } from '../../src/native/fd-watch';

const haveTools = toolAvailable('qemu-storage-daemon') && toolAvailable('qemu-img') && toolAvailable('qemu-io');
const SIZE = 64 * 1024 * 1024;

/** Bits the reference offers that qbd leaves out: dirty logging for migration and legacy NOTIFY_ON_EMPTY. */
const FEATURES_LEFT_OUT = P.bit(24) | P.bit(26);
/** Protocol features qbd offers: the reference offers more (logging, back-end requests, page faults, host notifiers). */
const PROTOCOL_OFFERED = P.bit(P.PROTOCOL_F.MQ) | P.bit(P.PROTOCOL_F.REPLY_ACK) | P.bit(P.PROTOCOL_F.CONFIG) | P.bit(P.PROTOCOL_F.CONFIGURE_MEM_SLOTS);

const running: RunningDaemon[] = [];
const frontends: BlockFrontend[] = [];
afterEach(async () => {
  for (const f of frontends.splice(0)) f.close();
  for (const d of running.splice(0)) await d.stop();
});

/** A daemon exporting a raw image (first MiB filled with 0x5a) over vhost-user-blk. */
async function exportImage(flavour: Flavour, exportOpts = 'writable=on', extra: string[] = []): Promise<{ dir: string; sock: string; image: string; daemon: RunningDaemon }> {
  const dir = tempDir(`qbd-vublk-${flavour}-`);
  const image = path.join(dir, 'disk.raw');
  fs.writeFileSync(image, Buffer.alloc(0));
  fs.truncateSync(image, SIZE);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', image], { stdio: 'ignore' });
  const sock = path.join(dir, 'vu.sock');
  const daemon = await startDaemon(flavour, [...extra, '--blockdev', `file,filename=${image},node-name=f`, '--blockdev', 'raw,file=f,node-name=n', '--export', `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${sock},${exportOpts}`], { dir });
  running.push(daemon);
  return { dir, sock, image, daemon };
}

async function open(sock: string, opts?: Parameters<typeof BlockFrontend.open>[1]): Promise<BlockFrontend> {
  const f = await BlockFrontend.open(sock, opts);
  frontends.push(f);
  return f;
}

function segment(sector: bigint, sectors: number, flags: number): Buffer {
  const s = Buffer.alloc(P.BLK_SEGMENT_SIZE);
  s.writeBigUInt64LE(sector, 0);
  s.writeUInt32LE(sectors, 8);
  s.writeUInt32LE(flags, 12);
  return s;
}

/** Every answer a conversation gets, in order: what must match the reference. */
async function conversation(sock: string): Promise<unknown[]> {
  const f = await open(sock);
  const out: unknown[] = [];
  out.push({ features: (f.features & ~FEATURES_LEFT_OUT).toString(16) });
  out.push({ offered: ((await f.fe.getU64(P.REQ.GET_FEATURES)) & ~FEATURES_LEFT_OUT).toString(16) });
  out.push({ protocol: ((await f.fe.getU64(P.REQ.GET_PROTOCOL_FEATURES)) & PROTOCOL_OFFERED).toString(16) });
  out.push({ queues: await f.fe.getU64(P.REQ.GET_QUEUE_NUM) });
  out.push({ slots: await f.fe.getU64(P.REQ.GET_MAX_MEM_SLOTS) });
  out.push({ config: (await f.config()).toString('hex') });
  out.push({ configTooLong: (await f.config(256)).length });
  const at4 = await f.fe.call(P.REQ.GET_CONFIG, Buffer.concat([Buffer.from([4, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(8)]));
  out.push({ configAt4: at4.payload.toString('hex') });
  const wce = Buffer.alloc(13);
  wce.writeUInt32LE(P.CONFIG.WRITEBACK, 0);
  wce.writeUInt32LE(1, 4);
  wce[12] = 1;
  out.push({ setWriteback: await f.acked(P.REQ.SET_CONFIG, wce) });
  out.push({ configWriteback: (await f.config()).toString('hex') });
  const requests: Array<[string, number, bigint, Buffer | number]> = [
    ['get-id', P.BLK_T.GET_ID, 0n, 20],
    ['get-id short', P.BLK_T.GET_ID, 0n, 8],
    ['read', P.BLK_T.IN, 0n, 4096],
    ['write', P.BLK_T.OUT, 4096n, Buffer.alloc(8192, 0xc3)],
    ['read back', P.BLK_T.IN, 4096n, 8192],
    ['read past the end', P.BLK_T.IN, BigInt(SIZE / 512), 512],
    ['read across the end', P.BLK_T.IN, BigInt(SIZE / 512 - 1), 1024],
    ['write past the end', P.BLK_T.OUT, BigInt(SIZE / 512), Buffer.alloc(512)],
    ['read of part of a sector', P.BLK_T.IN, 0n, 100],
    ['empty read', P.BLK_T.IN, 0n, 0],
    ['flush', P.BLK_T.FLUSH, 0n, 0],
    ['unknown type', 99, 0n, 0],
    ['discard', P.BLK_T.DISCARD, 0n, segment(64n, 8, 0)],
    ['discard with unmap', P.BLK_T.DISCARD, 0n, segment(64n, 8, P.BLK_WRITE_ZEROES_F_UNMAP)],
    ['discard past the end', P.BLK_T.DISCARD, 0n, segment(BigInt(SIZE / 512), 8, 0)],
    ['two discard segments', P.BLK_T.DISCARD, 0n, Buffer.concat([segment(64n, 8, 0), segment(128n, 8, 0)])],
    ['short discard segment', P.BLK_T.DISCARD, 0n, Buffer.alloc(8)],
    ['write zeroes', P.BLK_T.WRITE_ZEROES, 0n, segment(8n, 8, 0)],
    ['write zeroes with unmap', P.BLK_T.WRITE_ZEROES, 0n, segment(16n, 8, P.BLK_WRITE_ZEROES_F_UNMAP)],
    ['write zeroes with unknown flags', P.BLK_T.WRITE_ZEROES, 0n, segment(16n, 8, 4)],
    ['read zeroed', P.BLK_T.IN, 8n, 8192],
  ];
  for (const [name, type, sector, data] of requests) {
    const r = await f.request(type, sector, data);
    out.push({ name, status: r.status, len: r.len, data: type === P.BLK_T.IN || type === P.BLK_T.GET_ID ? r.data.toString('hex') : undefined });
  }
  const base = await f.fe.call(P.REQ.GET_VRING_BASE, vringState(0, 0));
  out.push({ base: base.payload.toString('hex') });
  // A request the back-end does not handle ends the connection.
  f.fe.send(99);
  out.push({ unknownRequestDisconnects: await f.fe.disconnected() });
  return out;
}

describe.skipIf(!haveTools || !vhostUserCallsAvailable)('vhost-user-blk export, protocol level', () => {
  it('answers a front-end as qemu-storage-daemon does: features, config space, request statuses and data', async () => {
    const ours = await conversation((await exportImage('qbd')).sock);
    const theirs = await conversation((await exportImage('qsd')).sock);
    expect(ours).toEqual(theirs);
  }, 60_000);

  it('describes a read-only export with a larger logical block size as the reference does, and refuses writes to it', async () => {
    const ask = async (flavour: Flavour): Promise<unknown[]> => {
      const { sock } = await exportImage(flavour, 'logical-block-size=4096,num-queues=2');
      const f = await open(sock, { queues: 2 });
      const out: unknown[] = [(f.features & ~FEATURES_LEFT_OUT).toString(16), await f.fe.getU64(P.REQ.GET_QUEUE_NUM), (await f.config()).toString('hex')];
      for (const [type, sector, data] of [
        [P.BLK_T.OUT, 8n, Buffer.alloc(4096)],
        [P.BLK_T.IN, 1n, 4096],
        [P.BLK_T.IN, 8n, 512],
        [P.BLK_T.IN, 8n, 4096],
        [P.BLK_T.DISCARD, 0n, segment(8n, 8, 0)],
        [P.BLK_T.WRITE_ZEROES, 0n, segment(8n, 8, 0)],
      ] as const) {
        const r = await f.request(type, sector, data, { queue: 1 });
        out.push([r.status, r.len]);
      }
      return out;
    };
    expect(await ask('qbd')).toEqual(await ask('qsd'));
  }, 60_000);

  it('puts what a queue wrote into the image, through indirect descriptors and with EVENT_IDX', async () => {
    const { sock, image, daemon } = await exportImage('qbd');
    const f = await open(sock, { eventIdx: true, queueSize: 64 });
    expect(f.features & P.bit(P.F.RING_EVENT_IDX)).not.toBe(0n);
    const q = f.queues[0];
    // Several requests in flight at once, each an indirect table of three descriptors.
    const pattern = (i: number): Buffer => Buffer.alloc(65536, 0x10 + i);
    const heads: number[] = [];
    for (let i = 0; i < 8; i++) {
      const base = GUEST_BASE + BigInt(0x200000 + i * 0x20000);
      const table = base;
      const hdr = base + 0x100n;
      const status = base + 0x200n;
      const data = base + 0x1000n;
      const h = f.at(hdr, P.BLK_REQ_HEADER);
      h.writeUInt32LE(P.BLK_T.OUT, 0);
      h.writeBigUInt64LE(BigInt(2048 + i * 128), 8);
      pattern(i).copy(f.at(data, 65536));
      const entries = [
        [hdr, P.BLK_REQ_HEADER, P.DESC_F_NEXT, 1],
        [data, 65536, P.DESC_F_NEXT, 2],
        [status, 1, P.DESC_F_WRITE, 0],
      ] as const;
      entries.forEach(([addr, len, flags, next], k) => {
        const d = f.at(table + BigInt(k * P.DESC_SIZE), P.DESC_SIZE);
        d.writeBigUInt64LE(addr, 0);
        d.writeUInt32LE(len, 8);
        d.writeUInt16LE(flags, 12);
        d.writeUInt16LE(next, 14);
      });
      f.writeDesc(q, i, table, 3 * P.DESC_SIZE, P.DESC_F_INDIRECT, 0);
      f.at(status, 1)[0] = 0xff;
      heads.push(i);
    }
    for (const h of heads) f.publish(q, h);
    const done = new Set<number>();
    for (let i = 0; i < heads.length; i++) done.add((await f.nextUsed(q)).id);
    expect([...done].sort()).toEqual(heads);
    for (let i = 0; i < 8; i++) expect(f.at(GUEST_BASE + BigInt(0x200000 + i * 0x20000 + 0x200), 1)[0]).toBe(P.BLK_S_OK);
    const flush = await f.request(P.BLK_T.FLUSH, 0n, 0, { slot: 9 });
    expect(flush.status).toBe(P.BLK_S_OK);
    f.close();
    frontends.splice(frontends.indexOf(f), 1);
    await daemon.stop();
    const disk = fs.readFileSync(image);
    for (let i = 0; i < 8; i++) expect(disk.subarray((2048 + i * 128) * 512, (2048 + i * 128) * 512 + 65536).equals(pattern(i))).toBe(true);
    expect(disk.subarray(0, 1 << 20).equals(Buffer.alloc(1 << 20, 0x5a))).toBe(true);
    // The same writes made by qemu-io on a fresh image give an identical one.
    const expected = path.join(path.dirname(image), 'expected.raw');
    fs.writeFileSync(expected, Buffer.alloc(0));
    fs.truncateSync(expected, SIZE);
    const writes = ['write -P 0x5a 0 1M', ...heads.map((i) => `write -P ${0x10 + i} ${(2048 + i * 128) * 512} 64k`)];
    execFileSync('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w]), expected], { stdio: 'ignore' });
    execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, expected]);
  }, 60_000);

  it('disconnects a front-end whose rings point outside its memory or loop, and keeps serving the next', async () => {
    const { sock, daemon } = await exportImage('qbd');
    const hostile: Array<(f: BlockFrontend) => void> = [
      // A data buffer outside guest memory.
      (f) => {
        const q = f.queues[0];
        f.writeDesc(q, 0, GUEST_BASE + BigInt(MEM_SIZE), 512, P.DESC_F_NEXT, 1);
        f.writeDesc(q, 1, GUEST_BASE + 0x1000n, 1, P.DESC_F_WRITE, 0);
        f.publish(q, 0);
      },
      // A chain that loops.
      (f) => {
        const q = f.queues[0];
        f.writeDesc(q, 0, GUEST_BASE + 0x100000n, 16, P.DESC_F_NEXT, 1);
        f.writeDesc(q, 1, GUEST_BASE + 0x101000n, 16, P.DESC_F_NEXT, 0);
        f.publish(q, 0);
      },
      // A head past the descriptor table.
      (f) => f.publish(f.queues[0], 1000),
      // An indirect table that is not a whole number of descriptors.
      (f) => {
        const q = f.queues[0];
        f.writeDesc(q, 0, GUEST_BASE + 0x100000n, 20, P.DESC_F_INDIRECT, 0);
        f.publish(q, 0);
      },
    ];
    for (const attack of hostile) {
      const f = await open(sock);
      attack(f);
      expect(await f.fe.disconnected()).toBe(true);
    }
    // A queue resized under a running ring, then a jump of its available index: served or cut off, never a crash.
    const resized = await open(sock);
    resized.fe.send(P.REQ.SET_VRING_NUM, vringState(0, 32768));
    const q0 = resized.queues[0];
    resized.writeDesc(q0, 0, GUEST_BASE + 0x1000n, 1, P.DESC_F_WRITE, 0);
    resized.at(q0.avail, 4).writeUInt16LE(100, 2);
    const kick = Buffer.alloc(8);
    kick.writeBigUInt64LE(1n);
    writeFd(q0.kick, kick);
    await resized.fe.call(P.REQ.GET_QUEUE_NUM).catch(() => undefined);
    resized.close();
    frontends.splice(frontends.indexOf(resized), 1);
    // A memory region larger than the memory behind it.
    const big = await open(sock);
    const table = Buffer.alloc(8 + P.MEM_REGION_SIZE);
    table.writeUInt32LE(1, 0);
    table.writeBigUInt64LE(GUEST_BASE, 8);
    table.writeBigUInt64LE(BigInt(MEM_SIZE * 2), 16);
    table.writeBigUInt64LE(0x7f1200000000n, 24);
    big.fe.send(P.REQ.SET_MEM_TABLE, table, [big.memFd], P.FLAG_VERSION | P.FLAG_NEED_REPLY);
    expect(await big.fe.disconnected()).toBe(true);
    // A broken message header ends the connection too.
    const f = await open(sock);
    f.fe.send(P.REQ.GET_FEATURES, Buffer.alloc(0), [], 0x2);
    expect(await f.fe.disconnected()).toBe(true);

    const good = await open(sock);
    const r = await good.request(P.BLK_T.IN, 0n, 512);
    expect(r.status).toBe(P.BLK_S_OK);
    expect(r.data.equals(Buffer.alloc(512, 0x5a))).toBe(true);
    const c = await daemon.client();
    expect(await c.cmd('query-block-exports')).toEqual([{ id: 'e', type: 'vhost-user-blk', 'node-name': 'n', 'shutting-down': false }]);
    c.close();
  }, 60_000);

  it('takes memory regions one by one when the front-end uses memory slots', async () => {
    const { sock } = await exportImage('qbd');
    const f = await open(sock);
    // Replace the table with the same region, announced by ADD_MEM_REG after removing it.
    const region = Buffer.alloc(8 + P.MEM_REGION_SIZE);
    region.writeBigUInt64LE(GUEST_BASE, 8);
    region.writeBigUInt64LE(BigInt(MEM_SIZE), 16);
    region.writeBigUInt64LE(0x7f1200000000n, 24);
    expect(await f.acked(P.REQ.REM_MEM_REG, region)).toBe(0n);
    expect(await f.acked(P.REQ.REM_MEM_REG, region)).not.toBe(0n);
    expect(await f.acked(P.REQ.ADD_MEM_REG, region, [f.memFd])).toBe(0n);
    await f.setUpQueue(0, 16);
    const r = await f.request(P.BLK_T.IN, 0n, 512);
    expect(r.status).toBe(P.BLK_S_OK);
    expect(r.data.equals(Buffer.alloc(512, 0x5a))).toBe(true);
  }, 60_000);

  it('serves from an iothread, where the node lives', async () => {
    const { sock, image, daemon } = await exportImage('qbd', 'writable=on,iothread=io0', ['--object', 'iothread,id=io0']);
    const f = await open(sock);
    const w = await f.request(P.BLK_T.OUT, 4096n, Buffer.alloc(4096, 0x77));
    expect(w.status).toBe(P.BLK_S_OK);
    const r = await f.request(P.BLK_T.IN, 4095n, 1024);
    expect(r.status).toBe(P.BLK_S_OK);
    expect(r.data.equals(Buffer.concat([Buffer.alloc(512, 0), Buffer.alloc(512, 0x77)]))).toBe(true);
    const c = await daemon.client();
    const nodes = (await c.cmd('query-named-block-nodes')) as Array<{ 'node-name': string }>;
    expect(nodes.map((n) => n['node-name']).sort()).toEqual(['f', 'n']);
    c.close();
    await daemon.stop();
    expect(fs.readFileSync(image).subarray(4096 * 512, 4097 * 512).equals(Buffer.alloc(512, 0x77))).toBe(true);
  }, 60_000);

  it('maps guest memory larger than a Node buffer, and serves buffers high in it', async () => {
    const { sock, image } = await exportImage('qbd');
    const GiB = 1024 * 1024 * 1024;
    // A sparse memfd: only the pages touched take memory.
    const f = await open(sock, { memSize: 6 * GiB });
    const highOffset = 5 * GiB + 12288;
    const high = mapShared(f.memFd, 5 * GiB, 1 << 20);
    try {
      const view = new Uint8Array(high, 12288, 8192);
      view.fill(0x6b);
      const q = f.queues[0];
      const hdrAddr = GUEST_BASE + 0x100000n;
      const hdr = f.at(hdrAddr, P.BLK_REQ_HEADER);
      const send = async (type: number): Promise<number> => {
        hdr.writeUInt32LE(type, 0);
        hdr.writeBigUInt64LE(100n, 8);
        f.at(hdrAddr + 0x100n, 1)[0] = 0xff;
        f.writeDesc(q, 0, hdrAddr, P.BLK_REQ_HEADER, P.DESC_F_NEXT, 1);
        f.writeDesc(q, 1, GUEST_BASE + BigInt(highOffset), 8192, P.DESC_F_NEXT | (type === P.BLK_T.IN ? P.DESC_F_WRITE : 0), 2);
        f.writeDesc(q, 2, hdrAddr + 0x100n, 1, P.DESC_F_WRITE, 0);
        f.publish(q, 0);
        await f.nextUsed(q);
        return f.at(hdrAddr + 0x100n, 1)[0];
      };
      expect(await send(P.BLK_T.OUT)).toBe(P.BLK_S_OK);
      view.fill(0);
      expect(await send(P.BLK_T.IN)).toBe(P.BLK_S_OK);
      expect(Buffer.from(view).equals(Buffer.alloc(8192, 0x6b))).toBe(true);
    } finally {
      releaseMapping(high);
    }
    const disk = fs.readFileSync(image);
    expect(disk.subarray(100 * 512, 100 * 512 + 8192).equals(Buffer.alloc(8192, 0x6b))).toBe(true);
  }, 60_000);

  it('keeps serving when a front-end never drains its blocking call eventfd', async () => {
    const { sock, daemon } = await exportImage('qbd');
    const f = await open(sock);
    const q = f.queues[0];
    // A blocking eventfd one short of its ceiling: one more write of 1 would block the writer.
    const call = eventFd(false);
    const full = Buffer.alloc(8);
    full.writeBigUInt64LE(0xfffffffffffffffdn);
    expect(writeFd(call, full)).toBe(8);
    f.fe.send(P.REQ.SET_VRING_CALL, u64(0n), [call]);
    closeFd(call);
    const used = f.at(q.used, 4);
    for (let i = 0; i < 3; i++) {
      f.submit(P.BLK_T.IN, BigInt(i), 512);
      await waitFor(() => used.readUInt16LE(2) === i + 1, 10_000, 'a completion on the used ring');
    }
    const c = await daemon.client();
    expect(await c.cmd('query-block-exports')).toHaveLength(1);
    c.close();
  }, 60_000);

  it('follows its node under a snapshot overlay, as the reference does', async () => {
    const run = async (flavour: Flavour): Promise<unknown[]> => {
      const { dir, sock, image, daemon } = await exportImage(flavour);
      const overlay = path.join(dir, 'overlay.qcow2');
      execFileSync('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-b', image, overlay], { stdio: 'ignore' });
      const f = await open(sock);
      const out: unknown[] = [(await f.request(P.BLK_T.OUT, 0n, Buffer.alloc(4096, 0x11))).status];
      const c = await daemon.client();
      out.push(await c.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'ov', file: { driver: 'file', filename: overlay }, backing: null }));
      out.push(await c.execute('blockdev-snapshot', { node: 'n', overlay: 'ov' }));
      out.push(await c.execute('query-block-exports'));
      out.push((await f.request(P.BLK_T.OUT, 8n, Buffer.alloc(4096, 0x22))).status);
      const r = await f.request(P.BLK_T.IN, 0n, 8192, { slot: 1 });
      out.push(r.status, r.data.equals(Buffer.concat([Buffer.alloc(4096, 0x11), Buffer.alloc(4096, 0x22)])));
      f.close();
      frontends.splice(frontends.indexOf(f), 1);
      out.push(await c.execute('block-export-del', { id: 'e' }));
      await c.waitEvent('BLOCK_EXPORT_DELETED');
      c.close();
      await daemon.stop();
      // The first write went to the raw image, the second only to the overlay.
      execFileSync('qemu-img', ['check', '-f', 'qcow2', overlay]);
      const base = fs.readFileSync(image);
      out.push(base.subarray(0, 4096).equals(Buffer.alloc(4096, 0x11)), base.subarray(4096, 8192).equals(Buffer.alloc(4096, 0x5a)));
      out.push(execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x22 4096 4096', overlay]).toString().includes('read 4096/4096'));
      return out;
    };
    expect(await run('qbd')).toEqual(await run('qsd'));
  }, 60_000);

  it('moves large scattered requests in pieces, each byte to its place', async () => {
    const { sock, image, daemon } = await exportImage('qbd');
    const f = await open(sock, { memSize: 64 << 20 });
    const q = f.queues[0];
    const data = randomBytes(9 << 20);
    const hdrAddr = GUEST_BASE + 0x100000n;
    const statusAddr = hdrAddr + 0x100n;
    /** One request whose data lies in `sizes` pieces, 4 KiB apart, from 16 MiB into guest memory. */
    const send = async (type: number, sizes: number[]): Promise<Buffer[]> => {
      const hdr = f.at(hdrAddr, P.BLK_REQ_HEADER);
      hdr.writeUInt32LE(type, 0);
      hdr.writeBigUInt64LE(2048n, 8);
      f.at(statusAddr, 1)[0] = 0xff;
      f.writeDesc(q, 0, hdrAddr, P.BLK_REQ_HEADER, P.DESC_F_NEXT, 1);
      let addr = GUEST_BASE + BigInt(16 << 20);
      let pos = 0;
      const pieces: Buffer[] = [];
      sizes.forEach((size, i) => {
        const piece = f.at(addr, size);
        if (type === P.BLK_T.OUT) data.copy(piece, 0, pos, pos + size);
        else piece.fill(0);
        pieces.push(piece);
        f.writeDesc(q, i + 1, addr, size, P.DESC_F_NEXT | (type === P.BLK_T.IN ? P.DESC_F_WRITE : 0), i + 2);
        addr += BigInt(size + 4096);
        pos += size;
      });
      f.writeDesc(q, sizes.length + 1, statusAddr, 1, P.DESC_F_WRITE, 0);
      f.publish(q, 0);
      await f.nextUsed(q);
      expect(f.at(statusAddr, 1)[0]).toBe(P.BLK_S_OK);
      return pieces;
    };
    await send(P.BLK_T.OUT, [3 << 20, 1 << 20, 5 << 20]);
    const back = await send(P.BLK_T.IN, [1536 << 10, 1536 << 10, 6 << 20]);
    expect(Buffer.concat(back).equals(data)).toBe(true);
    await daemon.stop();
    expect(fs.readFileSync(image).subarray(1 << 20, 10 << 20).equals(data)).toBe(true);
  }, 60_000);
});
