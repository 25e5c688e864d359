/**
 * Structural comparison of QMP replies from qbd and qemu-storage-daemon:
 * the same keys, the same JSON types, the same error classes and texts, once
 * what legitimately differs (paths, generated node names, timestamps, the
 * version's package string) is normalised.
 */
export type Json = any;

export function normalise(value: Json, dir: string): Json {
  if (typeof value === 'string') {
    return value
      .split(dir)
      .join('$DIR')
      .replace(/#block\d+/g, '#block');
  }
  if (Array.isArray(value)) return value.map((v) => normalise(v, dir));
  if (value && typeof value === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'timestamp') out[k] = '$TIME';
      else if (k === 'package') out[k] = '$PACKAGE';
      else out[k] = normalise(v, dir);
    }
    return out;
  }
  return value;
}

function kind(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Differences between two replies, as readable paths; empty when they match. */
export function structuralDiff(ours: Json, theirs: Json, at = '$', exactValues = false): string[] {
  if (kind(ours) !== kind(theirs)) return [`${at}: qbd has ${kind(ours)}, reference has ${kind(theirs)}`];
  if (Array.isArray(ours)) {
    if (ours.length !== theirs.length) return [`${at}: qbd has ${ours.length} items, reference has ${theirs.length}`];
    return ours.flatMap((v: Json, i: number) => structuralDiff(v, theirs[i], `${at}[${i}]`, exactValues));
  }
  if (kind(ours) === 'object') {
    const diffs: string[] = [];
    const keys = new Set([...Object.keys(ours), ...Object.keys(theirs)]);
    for (const k of keys) {
      if (!(k in ours)) diffs.push(`${at}.${k}: missing in qbd`);
      else if (!(k in theirs)) diffs.push(`${at}.${k}: only in qbd`);
      else {
        // Errors must match to the letter; other values by shape unless asked.
        const exact = exactValues || k === 'class' || k === 'desc' || k === 'event';
        diffs.push(...structuralDiff(ours[k], theirs[k], `${at}.${k}`, exact));
      }
    }
    return diffs;
  }
  if (exactValues && ours !== theirs) return [`${at}: qbd has ${JSON.stringify(ours)}, reference has ${JSON.stringify(theirs)}`];
  return [];
}
