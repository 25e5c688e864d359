/**
 * The parts of an X.509 certificate qbd checks, read from its DER: the
 * subject's distinguished name written the way QEMU 7.2 hands it to
 * tls-authz (GnuTLS's gnutls_x509_crt_get_dn: RFC 4514 escaping, parts in
 * the certificate's order, so usually `C=…,O=…,CN=…`), the
 * basic constraints, the key usage bits and the extended key usage
 * (purposes), each with its critical flag.
 */
import { X509Certificate } from 'node:crypto';
import { children, oidString, readNode, TAG, type DerNode } from './der';

export interface CertificateInfo {
  subject: string;
  /** Absent when the certificate has no basicConstraints extension. */
  basicConstraints?: { ca: boolean };
  /** Absent when the certificate has no keyUsage extension. */
  keyUsage?: { digitalSignature: boolean; keyEncipherment: boolean; keyCertSign: boolean; critical: boolean };
  /** Absent when the certificate has no extKeyUsage extension. */
  purposes?: { oids: string[]; critical: boolean };
  notBefore: Date;
  notAfter: Date;
}

export const PURPOSE = {
  SERVER: '1.3.6.1.5.5.7.3.1',
  CLIENT: '1.3.6.1.5.5.7.3.2',
  ANY: '2.5.29.37.0',
} as const;

/** Attribute names as GnuTLS prints them; others print as their dotted OID. */
const ATTRIBUTE_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.4': 'SN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.9': 'STREET',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.12': 'title',
  '2.5.4.42': 'GN',
  '2.5.4.43': 'initials',
  '2.5.4.44': 'generationQualifier',
  '2.5.4.46': 'dnQualifier',
  '2.5.4.65': 'pseudonym',
  '0.9.2342.19200300.100.1.1': 'UID',
  '0.9.2342.19200300.100.1.25': 'DC',
  '1.2.840.113549.1.9.1': 'EMAIL',
};

function stringValue(node: DerNode): string | undefined {
  switch (node.tag) {
    case TAG.UTF8_STRING:
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
      return node.value.toString('utf8');
    case TAG.T61_STRING:
      return node.value.toString('latin1');
    case TAG.BMP_STRING: {
      const b = Buffer.from(node.value);
      return b.swap16().toString('utf16le');
    }
    case TAG.UNIVERSAL_STRING: {
      let s = '';
      for (let i = 0; i + 4 <= node.value.length; i += 4) s += String.fromCodePoint(node.value.readUInt32BE(i));
      return s;
    }
    default:
      return undefined;
  }
}

/** RFC 4514 section 2.4 escaping. */
function escapeValue(v: string): string {
  let out = v.replace(/[\\,+"<>;]/g, (c) => `\\${c}`);
  if (out.startsWith('#') || out.startsWith(' ')) out = `\\${out}`;
  if (out.endsWith(' ') && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

/** A Name as text: relative names in encoding order, separated by ',', multi-valued ones joined with '+'. */
export function formatName(name: DerNode): string {
  return children(name)
    .map((rdn) =>
      children(rdn)
        .map((atv) => {
          const [type, value] = children(atv);
          if (!type || !value) throw new Error('DER: bad attribute');
          const oid = oidString(type);
          const text = stringValue(value);
          const key = ATTRIBUTE_NAMES[oid] ?? oid;
          return text === undefined ? `${key}=#${value.raw.toString('hex')}` : `${key}=${escapeValue(text)}`;
        })
        .join('+'),
    )
    .join(',');
}

function extensionsOf(tbs: DerNode[]): DerNode[] {
  const wrapper = tbs.find((n) => n.tag === 0xa3);
  if (!wrapper) return [];
  const [seq] = children(wrapper);
  return seq ? children(seq) : [];
}

/** Reads a certificate given as DER or PEM (the first certificate of a PEM text). */
export function certificateInfo(cert: Buffer | string): CertificateInfo {
  const x509 = new X509Certificate(cert);
  const { node } = readNode(x509.raw);
  const [tbsNode] = children(node);
  if (!tbsNode) throw new Error('DER: no tbsCertificate');
  const tbs = children(tbsNode);
  // With the explicit version first: serial, signature, issuer, validity, subject.
  const base = tbs[0]?.tag === 0xa0 ? 1 : 0;
  const subject = tbs[base + 4];
  if (!subject) throw new Error('DER: no subject');
  const info: CertificateInfo = { subject: formatName(subject), notBefore: new Date(x509.validFrom), notAfter: new Date(x509.validTo) };
  for (const ext of extensionsOf(tbs)) {
    const parts = children(ext);
    const oid = oidString(parts[0]!);
    const critical = parts[1]?.tag === TAG.BOOLEAN && parts[1].value[0] !== 0;
    const octets = parts[parts.length - 1]!;
    const { node: value } = readNode(octets.value);
    if (oid === '2.5.29.19') {
      const first = children(value)[0];
      info.basicConstraints = { ca: first?.tag === TAG.BOOLEAN && first.value[0] !== 0 };
    } else if (oid === '2.5.29.15') {
      const bits = value.value.subarray(1);
      const bit = (i: number): boolean => ((bits[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0;
      info.keyUsage = { digitalSignature: bit(0), keyEncipherment: bit(2), keyCertSign: bit(5), critical };
    } else if (oid === '2.5.29.37') {
      info.purposes = { oids: children(value).map(oidString), critical };
    }
  }
  return info;
}

/** The PEM blocks of one kind in a text (a CA file may hold several certificates). */
export function pemBlocks(text: string, label = 'CERTIFICATE'): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g');
  return text.match(re) ?? [];
}
