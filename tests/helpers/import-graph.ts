/**
 * Follows relative imports from an entry file and reports files of a world
 * the entry must not reach. Used to check that I/O-context code never loads
 * global-state code.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const IMPORT_RE = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+['"](\.[^'"]+)['"]|require\(\s*['"](\.[^'"]+)['"]\s*\)|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;

function resolveTs(from: string, spec: string): string | undefined {
  const base = path.resolve(path.dirname(from), spec);
  for (const candidate of [`${base}.ts`, path.join(base, 'index.ts'), base]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  }
  return undefined;
}

/** Every file reachable from `entry`, with the chain that reached it. */
export function importClosure(entry: string): Map<string, string[]> {
  const chains = new Map<string, string[]>([[entry, [entry]]]);
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (!file.endsWith('.ts')) continue;
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT_RE)) {
      // Type-only imports vanish at compile time; they do not load code.
      if (/^\s*import\s+type\s/.test(m[0].trimStart()) || /^\s*export\s+type\s/.test(m[0].trimStart())) continue;
      const target = resolveTs(file, (m[1] ?? m[2] ?? m[3])!);
      if (target && !chains.has(target)) {
        chains.set(target, [...chains.get(file)!, target]);
        todo.push(target);
      }
    }
  }
  return chains;
}

/** Files reachable from `entry` whose path matches one of `forbidden`, each with its import chain. */
export function forbiddenImports(entry: string, forbidden: RegExp[]): string[][] {
  return [...importClosure(entry)].filter(([file]) => forbidden.some((re) => re.test(file.split(path.sep).join('/')))).map(([, chain]) => chain);
}
