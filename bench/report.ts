/** Prints one benchmark line: qbd's figure beside the reference's, and the ratio. */
export interface Figure {
  name: string;
  unit: string;
  qbd: number;
  qsd?: number;
  /** Whether a smaller figure is better (times, memory) or a larger one (throughput). */
  lowerIsBetter: boolean;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function printFigures(figures: Figure[]): void {
  const rows = figures.map((f) => {
    const ratio = f.qsd === undefined ? 'n/a' : (f.qbd / f.qsd).toFixed(2);
    return [f.name, `${f.qbd.toFixed(2)} ${f.unit}`, f.qsd === undefined ? 'not installed' : `${f.qsd.toFixed(2)} ${f.unit}`, `${ratio} (qbd/qsd, ${f.lowerIsBetter ? 'lower' : 'higher'} is better)`];
  });
  const header = ['benchmark', 'qbd', 'qemu-storage-daemon', 'ratio'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}
