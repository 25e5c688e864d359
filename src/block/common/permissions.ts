/**
 * Block permissions, as QEMU's graph uses them. Each edge of the graph says
 * what the parent does with the child (`perm`) and what it lets others do at
 * the same time (`shared`). The bit numbers are QEMU's: image locks on files
 * use bytes 100 + bit and 200 + bit (see the file driver).
 */
export const PERM = {
  CONSISTENT_READ: 1 << 0,
  WRITE: 1 << 1,
  WRITE_UNCHANGED: 1 << 2,
  RESIZE: 1 << 3,
} as const;

export const PERM_ALL = PERM.CONSISTENT_READ | PERM.WRITE | PERM.WRITE_UNCHANGED | PERM.RESIZE;

/** QAPI names (BlockPermission), in bit order. */
export const PERM_NAMES = ['consistent-read', 'write', 'write-unchanged', 'resize'] as const;
export type PermName = (typeof PERM_NAMES)[number];

/** The order QEMU lists permissions in x-debug-query-block-graph: highest bit first. */
export function permList(mask: number): PermName[] {
  const out: PermName[] = [];
  for (let bit = PERM_NAMES.length - 1; bit >= 0; bit--) {
    if (mask & (1 << bit)) out.push(PERM_NAMES[bit]!);
  }
  return out;
}

/** Comma-separated names, lowest bit first, as in QEMU's conflict messages. */
export function permDescription(mask: number): string {
  return PERM_NAMES.filter((_, bit) => mask & (1 << bit)).join(', ');
}
