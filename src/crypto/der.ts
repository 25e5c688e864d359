/**
 * A minimal DER reader: enough to walk an X.509 certificate's structure
 * (sequences, sets, context tags) and read the few values qbd looks at.
 * Malformed input throws; callers turn that into their own error.
 */

export interface DerNode {
  /** The identifier octet: class, constructed bit and tag number (low tag numbers only). */
  tag: number;
  /** The whole encoding, header included. */
  raw: Buffer;
  /** The contents. */
  value: Buffer;
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  T61_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Reads one TLV at `at`; returns it and the offset after it. */
export function readNode(buf: Buffer, at = 0): { node: DerNode; next: number } {
  if (at + 2 > buf.length) throw new Error('DER: truncated header');
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER: high tag numbers are not supported');
  let len = buf[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > buf.length) throw new Error('DER: bad length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > buf.length) throw new Error('DER: truncated value');
  return { node: { tag, raw: buf.subarray(at, end), value: buf.subarray(start, end) }, next: end };
}

/** The elements of a constructed node. */
export function children(node: DerNode): DerNode[] {
  const out: DerNode[] = [];
  for (let at = 0; at < node.value.length; ) {
    const { node: child, next } = readNode(node.value, at);
    out.push(child);
    at = next;
  }
  return out;
}

/** An OBJECT IDENTIFIER in dotted form. */
export function oidString(node: DerNode): string {
  const v = node.value;
  if (v.length === 0) throw new Error('DER: empty OID');
  const parts: number[] = [];
  const first = v[0]!;
  parts.push(first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80);
  let acc = 0;
  for (let i = 1; i < v.length; i++) {
    acc = acc * 128 + (v[i]! & 0x7f);
    if (!(v[i]! & 0x80)) {
      parts.push(acc);
      acc = 0;
    }
  }
  return parts.join('.');
}
