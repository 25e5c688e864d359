/**
 * JSON output the way QEMU writes it: `", "` and `": "` separators, and the
 * members of every object in QDict iteration order. QEMU builds replies as
 * QDicts, hash tables of 512 buckets; iterating one walks the buckets in
 * order, newest entry first within a bucket. Writing keys in that order
 * makes qbd's replies and `json:` filenames read exactly like QEMU's.
 */
const BUCKETS = 512;

/** QDict's bucket of a key (the tdb hash, over the key's UTF-8 bytes). */
function bucketOf(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let v = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) v = (v + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  return ((Math.imul(1103515243, v) + 12345) >>> 0) % BUCKETS;
}

const bucketCache = new Map<string, number>();

function cachedBucket(key: string): number {
  let b = bucketCache.get(key);
  if (b === undefined) {
    b = bucketOf(key);
    if (bucketCache.size < 10_000) bucketCache.set(key, b);
  }
  return b;
}

/** The keys of `obj` (in insertion order) as QEMU would iterate them. */
export function qdictKeyOrder(keys: string[]): string[] {
  return keys
    .map((k, i) => ({ k, i, b: cachedBucket(k) }))
    .sort((x, y) => x.b - y.b || y.i - x.i)
    .map((e) => e.k);
}

/** A JSON string as QEMU writes it: ASCII only, everything else as \uXXXX (surrogate pairs for astral characters). */
function quote(text: string): string {
  const json = JSON.stringify(text);
  return /[^\x20-\x7e]/.test(json) ? json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : json;
}

export function toQmpJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(toQmpJson).join(', ')}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
      if (keys.length === 0) return '{}';
      return `{${qdictKeyOrder(keys).map((k) => `${quote(k)}: ${toQmpJson(obj[k])}`).join(', ')}}`;
    }
    default:
      return 'null';
  }
}

/**
 * `pretty=on` output: QEMU's layout, four spaces a level, and empty
 * containers still opened and closed on lines of their own.
 */
export function toQmpJsonPretty(value: unknown, indent = ''): string {
  if (value === null || typeof value !== 'object') return toQmpJson(value);
  const inner = indent + '    ';
  if (Array.isArray(value)) {
    return `[\n${value.map((v) => inner + toQmpJsonPretty(v, inner)).join(',\n')}${value.length ? '\n' : ''}${indent}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = qdictKeyOrder(Object.keys(obj).filter((k) => obj[k] !== undefined));
  const body = keys.map((k) => `${inner}${quote(k)}: ${toQmpJsonPretty(obj[k], inner)}`).join(',\n');
  return `{\n${body}${keys.length ? '\n' : ''}${indent}}`;
}
