/**
 * The FUSE structures qbd reads and writes have the layout of the kernel's
 * own header: a small C program prints sizes and field offsets from
 * <linux/fuse.h>, and the encoders and parsers must put and find each field
 * there.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as p from '../../src/exports/fuse/protocol';
import { tempDir } from '../helpers/daemons';
import { toolAvailable } from '../helpers/tools';

const FIELDS: Record<string, string[]> = {
  fuse_in_header: ['len', 'opcode', 'unique', 'nodeid', 'uid', 'gid', 'pid'],
  fuse_out_header: ['len', 'error', 'unique'],
  fuse_init_in: ['major', 'minor', 'max_readahead', 'flags'],
  fuse_init_out: ['major', 'minor', 'max_readahead', 'flags', 'max_write', 'time_gran', 'max_pages'],
  fuse_attr_out: ['attr_valid', 'attr.ino', 'attr.size', 'attr.blocks', 'attr.atime', 'attr.mtime', 'attr.ctime', 'attr.mode', 'attr.nlink', 'attr.uid', 'attr.gid', 'attr.blksize'],
  fuse_setattr_in: ['valid', 'size', 'mode', 'uid', 'gid'],
  fuse_open_in: ['flags'],
  fuse_open_out: ['open_flags'],
  fuse_read_in: ['offset', 'size'],
  fuse_write_in: ['offset', 'size'],
  fuse_write_out: ['size'],
  fuse_fsync_in: ['fsync_flags'],
  fuse_fallocate_in: ['offset', 'length', 'mode'],
  fuse_lseek_in: ['offset', 'whence'],
  fuse_lseek_out: ['offset'],
  fuse_kstatfs: ['bsize', 'namelen'],
  fuse_getattr_in: ['getattr_flags'],
};

/** Sizes and offsets as the C compiler lays the kernel's structures out. */
function kernelLayout(): Record<string, number> {
  const dir = tempDir('qbd-fuse-layout-');
  try {
    const lines = Object.entries(FIELDS).flatMap(([s, fields]) => [
      `printf("${s} %zu\\n", sizeof(struct ${s}));`,
      ...fields.map((f) => `printf("${s}.${f} %zu\\n", offsetof(struct ${s}, ${f}));`),
    ]);
    const src = `#include <stddef.h>\n#include <stdio.h>\n#include <linux/fuse.h>\nint main(void) {\n${lines.join('\n')}\nreturn 0;\n}\n`;
    fs.writeFileSync(path.join(dir, 'layout.c'), src);
    execFileSync('cc', ['-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
    const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
    return Object.fromEntries(out.trim().split('\n').map((l) => [l.split(' ')[0]!, Number(l.split(' ')[1])]));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A buffer whose bytes at `offset` hold `value` (little-endian, `bytes` wide). */
function withField(size: number, offset: number, value: number, bytes: 4 | 8): Buffer {
  const b = Buffer.alloc(size);
  if (bytes === 8) b.writeBigUInt64LE(BigInt(value), offset);
  else b.writeUInt32LE(value, offset);
  return b;
}

describe.skipIf(!toolAvailable('cc') || !fs.existsSync('/usr/include/linux/fuse.h'))('the FUSE structures', () => {
  const k = kernelLayout();

  it('have the sizes of the kernel header', () => {
    expect(p.IN_HEADER_SIZE).toBe(k.fuse_in_header);
    expect(p.OUT_HEADER_SIZE).toBe(k.fuse_out_header);
    expect(p.INIT_OUT_SIZE).toBe(k.fuse_init_out);
    expect(p.ATTR_OUT_SIZE).toBe(k.fuse_attr_out);
    expect(p.SETATTR_IN_SIZE).toBe(k.fuse_setattr_in);
    expect(p.OPEN_IN_SIZE).toBe(k.fuse_open_in);
    expect(p.OPEN_OUT_SIZE).toBe(k.fuse_open_out);
    expect(p.READ_IN_SIZE).toBe(k.fuse_read_in);
    expect(p.WRITE_IN_SIZE).toBe(k.fuse_write_in);
    expect(p.WRITE_OUT_SIZE).toBe(k.fuse_write_out);
    expect(p.FSYNC_IN_SIZE).toBe(k.fuse_fsync_in);
    expect(p.FALLOCATE_IN_SIZE).toBe(k.fuse_fallocate_in);
    expect(p.LSEEK_IN_SIZE).toBe(k.fuse_lseek_in);
    expect(p.LSEEK_OUT_SIZE).toBe(k.fuse_lseek_out);
    expect(p.STATFS_OUT_SIZE).toBe(k.fuse_kstatfs);
    expect(p.GETATTR_IN_SIZE).toBe(k.fuse_getattr_in);
  });

  it('are parsed from the kernel offsets', () => {
    const h = Buffer.alloc(p.IN_HEADER_SIZE);
    h.writeUInt32LE(123, k['fuse_in_header.len']!);
    h.writeUInt32LE(p.OP.WRITE, k['fuse_in_header.opcode']!);
    h.writeBigUInt64LE(77n, k['fuse_in_header.unique']!);
    h.writeBigUInt64LE(1n, k['fuse_in_header.nodeid']!);
    h.writeUInt32LE(1000, k['fuse_in_header.uid']!);
    h.writeUInt32LE(1001, k['fuse_in_header.gid']!);
    h.writeUInt32LE(4242, k['fuse_in_header.pid']!);
    expect(p.parseInHeader(h)).toEqual({ len: 123, opcode: p.OP.WRITE, unique: 77n, nodeid: 1n, uid: 1000, gid: 1001, pid: 4242 });

    expect(p.parseIoIn(withField(p.READ_IN_SIZE, k['fuse_read_in.offset']!, 5 << 20, 8)).offset).toBe(5 << 20);
    expect(p.parseIoIn(withField(p.WRITE_IN_SIZE, k['fuse_write_in.size']!, 65536, 4)).size).toBe(65536);
    expect(p.parseSetattrIn(withField(p.SETATTR_IN_SIZE, k['fuse_setattr_in.size']!, 3 << 20, 8)).size).toBe(3 << 20);
    expect(p.parseSetattrIn(withField(p.SETATTR_IN_SIZE, k['fuse_setattr_in.mode']!, 0o640, 4)).mode).toBe(0o640);
    expect(p.parseSetattrIn(withField(p.SETATTR_IN_SIZE, k['fuse_setattr_in.uid']!, 7, 4)).uid).toBe(7);
    expect(p.parseSetattrIn(withField(p.SETATTR_IN_SIZE, k['fuse_setattr_in.gid']!, 8, 4)).gid).toBe(8);
    expect(p.parseSetattrIn(withField(p.SETATTR_IN_SIZE, k['fuse_setattr_in.valid']!, p.FATTR.SIZE, 4)).valid).toBe(p.FATTR.SIZE);
    expect(p.parseFallocateIn(withField(p.FALLOCATE_IN_SIZE, k['fuse_fallocate_in.length']!, 9999, 8)).length).toBe(9999);
    expect(p.parseFallocateIn(withField(p.FALLOCATE_IN_SIZE, k['fuse_fallocate_in.mode']!, 3, 4)).mode).toBe(3);
    expect(p.parseLseekIn(withField(p.LSEEK_IN_SIZE, k['fuse_lseek_in.whence']!, p.SEEK_HOLE, 4)).whence).toBe(p.SEEK_HOLE);
    expect(p.parseInitIn(withField(p.INIT_IN_MIN_SIZE, k['fuse_init_in.max_readahead']!, 131072, 4)).maxReadahead).toBe(131072);
  });

  it('are written at the kernel offsets', () => {
    const init = Buffer.alloc(p.INIT_OUT_SIZE);
    p.encodeInitOut(init, { major: 7, minor: 31, maxReadahead: 4096, flags: 0x8001, maxWrite: 1 << 20, timeGran: 1, maxPages: 256 });
    expect(init.readUInt32LE(k['fuse_init_out.minor']!)).toBe(31);
    expect(init.readUInt32LE(k['fuse_init_out.flags']!)).toBe(0x8001);
    expect(init.readUInt32LE(k['fuse_init_out.max_write']!)).toBe(1 << 20);
    expect(init.readUInt32LE(k['fuse_init_out.time_gran']!)).toBe(1);
    expect(init.readUInt16LE(k['fuse_init_out.max_pages']!)).toBe(256);

    const attr = Buffer.alloc(p.ATTR_OUT_SIZE);
    p.encodeAttrOut(attr, 1, { ino: 1, size: 1 << 30, blocks: 2048, time: 1_700_000_000, mode: 0o100600, uid: 5, gid: 6, blksize: 512 });
    expect(attr.readBigUInt64LE(k['fuse_attr_out.attr_valid']!)).toBe(1n);
    expect(attr.readBigUInt64LE(k['fuse_attr_out.attr.size']!)).toBe(BigInt(1 << 30));
    expect(attr.readBigUInt64LE(k['fuse_attr_out.attr.blocks']!)).toBe(2048n);
    expect(attr.readBigUInt64LE(k['fuse_attr_out.attr.ctime']!)).toBe(1_700_000_000n);
    expect(attr.readUInt32LE(k['fuse_attr_out.attr.mode']!)).toBe(0o100600);
    expect(attr.readUInt32LE(k['fuse_attr_out.attr.nlink']!)).toBe(1);
    expect(attr.readUInt32LE(k['fuse_attr_out.attr.uid']!)).toBe(5);
    expect(attr.readUInt32LE(k['fuse_attr_out.attr.gid']!)).toBe(6);
    expect(attr.readUInt32LE(k['fuse_attr_out.attr.blksize']!)).toBe(512);

    const open = Buffer.alloc(p.OPEN_OUT_SIZE);
    p.encodeOpenOut(open, p.FOPEN_DIRECT_IO);
    expect(open.readUInt32LE(k['fuse_open_out.open_flags']!)).toBe(p.FOPEN_DIRECT_IO);

    const statfs = Buffer.alloc(p.STATFS_OUT_SIZE);
    p.encodeStatfsOut(statfs, 512, 255);
    expect(statfs.readUInt32LE(k['fuse_kstatfs.bsize']!)).toBe(512);
    expect(statfs.readUInt32LE(k['fuse_kstatfs.namelen']!)).toBe(255);

    const out = Buffer.alloc(p.OUT_HEADER_SIZE + 8);
    p.writeOutHeader(out, 99n, -2);
    expect(out.readUInt32LE(k['fuse_out_header.len']!)).toBe(24);
    expect(out.readInt32LE(k['fuse_out_header.error']!)).toBe(-2);
    expect(out.readBigUInt64LE(k['fuse_out_header.unique']!)).toBe(99n);
  });
});
