/**
 * The iteration order of a GLib hash table keyed by strings.
 *
 * The reference keeps a QOM object's children in a GHashTable and lists
 * them (qom-list, query-chardev) in the table's slot order, reversed. That
 * order depends on the keys' hashes, on the order they were added and
 * removed, and on when the table grew or shrank. This class replays those
 * operations on a table of slots that follows GLib 2.74's rules (g_str_hash,
 * open addressing with quadratic probing, tombstones, resizing by load), so
 * qbd lists the same names in the same order. It stores no values: a
 * registry keeps its own map and asks this for the order only.
 *
 * Pure code, usable anywhere.
 */

const MIN_SHIFT = 3;
const UNUSED = 0;
const TOMBSTONE = 1;

/** The primes GLib takes its modulus from, one per table size 2^shift. */
const PRIME_MOD = [
  1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071, 262139, 524287, 1048573, 2097143, 4194301,
  8388593, 16777213, 33554393, 67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647,
];

/** g_str_hash: djb2 over the UTF-8 bytes, each read as a signed char. */
export function gStrHash(key: string): number {
  let h = 5381;
  for (const byte of Buffer.from(key, 'utf8')) {
    const signed = byte >= 0x80 ? byte - 0x100 : byte;
    h = (Math.imul(h, 33) + signed) >>> 0;
  }
  return h;
}

export class GHashOrder {
  private size = 1 << MIN_SHIFT;
  private mod = PRIME_MOD[MIN_SHIFT]!;
  private hashes: number[] = new Array<number>(this.size).fill(UNUSED);
  private keys: Array<string | undefined> = new Array<string | undefined>(this.size);
  private nnodes = 0;
  private noccupied = 0;

  has(key: string): boolean {
    const { index } = this.lookup(key);
    return this.isReal(index) && this.keys[index] === key;
  }

  add(key: string): void {
    const { index, hash } = this.lookup(key);
    const previous = this.hashes[index]!;
    if (previous >= 2) return;
    this.hashes[index] = hash;
    this.keys[index] = key;
    this.nnodes++;
    if (previous === UNUSED) {
      this.noccupied++;
      this.maybeResize();
    }
  }

  delete(key: string): void {
    const { index } = this.lookup(key);
    if (!this.isReal(index) || this.keys[index] !== key) return;
    this.hashes[index] = TOMBSTONE;
    this.keys[index] = undefined;
    this.nnodes--;
    this.maybeResize();
  }

  /** The keys in slot order: the order GLib iterates them. */
  order(): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.size; i++) if (this.isReal(i)) out.push(this.keys[i]!);
    return out;
  }

  private isReal(i: number): boolean {
    return this.hashes[i]! >= 2;
  }

  private toIndex(hash: number): number {
    return (Math.imul(hash, 11) >>> 0) % this.mod;
  }

  /** The slot holding `key`, or where it would go: the first tombstone passed, else the empty slot that ended the probe. */
  private lookup(key: string): { index: number; hash: number } {
    let hash = gStrHash(key);
    if (hash < 2) hash = 2;
    let index = this.toIndex(hash);
    let tombstone: number | undefined;
    let step = 0;
    while (this.hashes[index] !== UNUSED) {
      const h = this.hashes[index]!;
      if (h === hash && this.keys[index] === key) return { index, hash };
      if (h === TOMBSTONE && tombstone === undefined) tombstone = index;
      step++;
      index = (index + step) & (this.size - 1);
    }
    return { index: tombstone ?? index, hash };
  }

  private maybeResize(): void {
    const { size, nnodes, noccupied } = this;
    if ((size > nnodes * 4 && size > 1 << MIN_SHIFT) || size <= noccupied + Math.floor(noccupied / 16)) this.resize();
  }

  /** Rehashes in place as GLib does: each entry moves to its new home, evicting and re-placing whatever sat there. */
  private resize(): void {
    const oldSize = this.size;
    let shift = 0;
    for (let n = Math.trunc(this.nnodes * 1.333); n; n >>= 1) shift++;
    shift = Math.max(shift, MIN_SHIFT);
    this.size = 1 << shift;
    this.mod = PRIME_MOD[shift]!;
    const mask = this.size - 1;
    for (let i = oldSize; i < this.size; i++) {
      this.hashes[i] = UNUSED;
      this.keys[i] = undefined;
    }
    const placed = new Array<boolean>(Math.max(this.size, oldSize)).fill(false);
    for (let i = 0; i < oldSize; i++) {
      let nodeHash = this.hashes[i]!;
      if (nodeHash < 2) {
        this.hashes[i] = UNUSED;
        this.keys[i] = undefined;
        continue;
      }
      if (placed[i]) continue;
      this.hashes[i] = UNUSED;
      let key = this.keys[i];
      this.keys[i] = undefined;
      for (;;) {
        let slot = this.toIndex(nodeHash);
        let step = 0;
        while (placed[slot]) {
          step++;
          slot = (slot + step) & mask;
        }
        placed[slot] = true;
        const replacedHash = this.hashes[slot]!;
        const replacedKey = this.keys[slot];
        this.hashes[slot] = nodeHash;
        this.keys[slot] = key;
        if (replacedHash < 2) break;
        nodeHash = replacedHash;
        key = replacedKey;
      }
    }
    this.hashes.length = this.size;
    this.keys.length = this.size;
    this.noccupied = this.nnodes;
  }
}
