/**
 * Which unexpected member QEMU names when there are several. Its input
 * visitor keeps the members it has not visited yet in a GLib hash table of
 * strings and reports the first one that table's iterator yields. This
 * replays that table: g_str_hash, index = hash * 11 mod a prime, quadratic
 * probing in a power-of-two array, growth when it fills. Growth is replayed
 * as a fresh insertion in slot order, which GLib's in-place rehash matches
 * for the small tables QMP arguments make.
 */

/** GLib's prime moduli, by log2 of the table size. */
const PRIME_MOD = [1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381];
const MIN_SHIFT = 3;

function strHash(key: string): number {
  let h = 5381;
  for (const byte of Buffer.from(key, 'utf8')) {
    const signed = byte > 127 ? byte - 256 : byte;
    h = (Math.imul(h, 33) + signed) >>> 0;
  }
  return h <= 1 ? 2 : h;
}

class GlibStringSet {
  private shift = MIN_SHIFT;
  private slots: Array<string | null> = new Array(1 << MIN_SHIFT).fill(null);
  private count = 0;

  insert(key: string): void {
    this.place(key);
    this.count++;
    if (this.slots.length <= this.count + Math.floor(this.count / 16)) this.grow();
  }

  remove(key: string): void {
    const i = this.slots.indexOf(key);
    if (i >= 0) {
      // A tombstone: the slot stays taken for probing, and is skipped by iteration.
      this.slots[i] = '\u0000tombstone';
      this.count--;
    }
  }

  first(): string | undefined {
    return this.slots.find((k): k is string => k !== null && k !== '\u0000tombstone');
  }

  private place(key: string): void {
    const mask = this.slots.length - 1;
    let i = (Math.imul(strHash(key), 11) >>> 0) % PRIME_MOD[this.shift]!;
    for (let step = 1; this.slots[i] !== null; step++) i = (i + step) & mask;
    this.slots[i] = key;
  }

  private grow(): void {
    const live = this.slots.filter((k): k is string => k !== null && k !== '\u0000tombstone');
    let n = Math.floor(live.length * 1.333);
    let shift = 0;
    while (n) {
      n >>= 1;
      shift++;
    }
    this.shift = Math.max(shift, MIN_SHIFT);
    this.slots = new Array(1 << this.shift).fill(null);
    for (const k of live) this.place(k);
  }
}

/**
 * The member QEMU reports as unexpected: `keys` are the object's members in
 * QDict order (the order they enter the table), `visited` the members the
 * visitor consumed.
 */
export function firstUnexpected(keys: string[], visited: Set<string>): string | undefined {
  const set = new GlibStringSet();
  for (const k of keys) set.insert(k);
  for (const k of keys) if (visited.has(k)) set.remove(k);
  return set.first();
}
