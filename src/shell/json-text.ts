/**
 * JSON text for the shell's output and for the wire.
 *
 * The compact form uses `", "` and `": "` separators, the way qmp-shell prints
 * (so transcripts look the same); the pretty form indents by four and sorts
 * keys, like qmp-shell's `-p`. BigInt values (integers typed beyond 2^53) are
 * written as exact JSON numbers, which `JSON.stringify` refuses to do.
 */

export interface JsonTextOptions {
  /** Indent by four spaces and sort object keys. */
  pretty?: boolean;
  /** Use `,` and `:` without spaces (for the wire). */
  tight?: boolean;
}

export function formatJson(value: unknown, options: JsonTextOptions = {}): string {
  return encode(value, options, '');
}

function encode(value: unknown, options: JsonTextOptions, indent: string): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      return 'null';
  }
  const inner = indent + '    ';
  const comma = options.tight ? ',' : ', ';
  const colon = options.tight ? ':' : ': ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    const items = value.map((item) => encode(item, options, inner));
    return options.pretty
      ? `[\n${inner}${items.join(`,\n${inner}`)}\n${indent}]`
      : `[${items.join(comma)}]`;
  }
  const record = value as Record<string, unknown>;
  let keys = Object.keys(record).filter((key) => record[key] !== undefined);
  if (keys.length === 0) return '{}';
  if (options.pretty) keys = keys.sort();
  const members = keys.map((key) => `${JSON.stringify(key)}${colon}${encode(record[key], options, inner)}`);
  return options.pretty
    ? `{\n${inner}${members.join(`,\n${inner}`)}\n${indent}}`
    : `{${members.join(comma)}}`;
}
