/**
 * The bytes of ringbuf-write and ringbuf-read, as the reference converts
 * them. `base64` input is checked for its alphabet only and then decoded
 * leniently, as GLib does (an incomplete last group is dropped). `utf8`
 * output stops at the first NUL byte, and every invalid UTF-8 sequence
 * becomes U+FFFD, as QEMU's JSON writer replaces it.
 *
 * Pure code, usable anywhere.
 */
import { QmpError } from '../errors';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const RANK = new Map([...ALPHABET].map((c, i) => [c, i]));

/** The bytes `data` stands for in `format`. */
export function ringbufInput(data: string, format: 'utf8' | 'base64' | undefined): Buffer {
  if (format !== 'base64') return utf8Bytes(data);
  if (!/^[A-Za-z0-9+/=]*$/.test(data)) throw QmpError.generic('Base64 data contains invalid characters');
  return decodeBase64(data);
}

/** The JSON string ringbuf-read answers for `bytes`. */
export function ringbufOutput(bytes: Buffer, format: 'utf8' | 'base64' | undefined): string {
  if (format === 'base64') return bytes.toString('base64');
  const nul = bytes.indexOf(0);
  return decodeUtf8(nul < 0 ? bytes : bytes.subarray(0, nul));
}

/** A string's bytes as QEMU holds them: UTF-8, with U+0000 as the two bytes C0 80 (modified UTF-8). */
function utf8Bytes(text: string): Buffer {
  if (!text.includes('\u0000')) return Buffer.from(text, 'utf8');
  const nul = Buffer.from([0xc0, 0x80]);
  return Buffer.concat(text.split('\u0000').flatMap((part, i) => (i === 0 ? [Buffer.from(part, 'utf8')] : [nul, Buffer.from(part, 'utf8')])));
}

/** GLib's decoder: four characters give three bytes, fewer when '=' ends the group; '=' counts as a zero digit. */
function decodeBase64(text: string): Buffer {
  const out: number[] = [];
  let value = 0;
  let digits = 0;
  let last = '';
  let beforeLast = '';
  for (const c of text) {
    beforeLast = last;
    last = c;
    value = ((value << 6) | (RANK.get(c) ?? 0)) & 0xffffff;
    if (++digits === 4) {
      out.push(value >> 16);
      if (beforeLast !== '=') out.push((value >> 8) & 0xff);
      if (last !== '=') out.push(value & 0xff);
      digits = 0;
    }
  }
  return Buffer.from(out);
}

const MIN_CODE_POINT = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/** One code point of QEMU's modified UTF-8 at `i`: its value (-1 when invalid) and where the next one starts. */
function codePointAt(bytes: Buffer, i: number): { cp: number; next: number } {
  const lead = bytes[i]!;
  if (lead < 0x80) return { cp: lead, next: i + 1 };
  if (lead >= 0xfe || (lead & 0x40) === 0) return { cp: -1, next: i + 1 };
  let len = 0;
  let mask = 0x80;
  for (; lead & mask; mask >>= 1) len++;
  let cp = lead & (mask - 1);
  let p = i + 1;
  for (let k = 1; k < len; k++) {
    const b = p < bytes.length ? bytes[p]! : 0;
    if ((b & 0xc0) !== 0x80) return { cp: -1, next: p };
    p++;
    cp = cp * 64 + (b & 0x3f);
  }
  const invalid =
    cp > 0x10ffff ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp & 0xfffe) === 0xfffe ||
    (cp >= 0xd800 && cp <= 0xdfff) ||
    (cp < MIN_CODE_POINT[len - 2]! && !(cp === 0 && len === 2));
  return { cp: invalid ? -1 : cp, next: p };
}

function decodeUtf8(bytes: Buffer): string {
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const { cp, next } = codePointAt(bytes, i);
    out += String.fromCodePoint(cp < 0 ? 0xfffd : cp);
    i = next;
  }
  return out;
}
