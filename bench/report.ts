/**
 * Prints benchmark lines: qbd's figure beside the reference's and the
 * ratio, and beside any further servers measured on the same work.
 */
export interface Figure {
  name: string;
  unit: string;
  qbd: number;
  qsd?: number;
  /** Figures of other programs doing the same work (e.g. nbdkit), by name. */
  others?: Record<string, number>;
  /** Whether a smaller figure is better (times, memory) or a larger one (throughput). */
  lowerIsBetter: boolean;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function printFigures(figures: Figure[]): void {
  const otherNames = [...new Set(figures.flatMap((f) => Object.keys(f.others ?? {})))];
  const value = (v: number | undefined, unit: string) => (v === undefined ? 'n/a' : `${v.toFixed(2)} ${unit}`);
  const ratio = (qbd: number, v: number | undefined) => (v === undefined ? 'n/a' : (qbd / v).toFixed(2));
  const rows = figures.map((f) => [
    f.name,
    value(f.qbd, f.unit),
    f.qsd === undefined ? 'not installed' : value(f.qsd, f.unit),
    `${ratio(f.qbd, f.qsd)} (qbd/qsd, ${f.lowerIsBetter ? 'lower' : 'higher'} is better)`,
    ...otherNames.flatMap((n) => [value(f.others?.[n], f.unit), ratio(f.qbd, f.others?.[n])]),
  ]);
  const header = ['benchmark', 'qbd', 'qemu-storage-daemon', 'ratio', ...otherNames.flatMap((n) => [n, `qbd/${n}`])];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}
