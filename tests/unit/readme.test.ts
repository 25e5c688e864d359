/**
 * The README's compatibility table stays true: the drivers, creatable
 * formats and commands it names are exactly what the schema and the driver
 * tables provide.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSchema, SCHEMA_DIR } from '../../src/qmp/schema/schema';
import { gsDrivers } from '../../src/block/global-state/driver-table';

const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', 'README.md'), 'utf8');
const schema = loadSchema(SCHEMA_DIR);

/** The backticked words of the qbd column of the table row whose first cell is `area`. */
function qbdCell(area: string): string[] {
  const row = readme.split('\n').find((l) => l.startsWith(`| ${area} |`));
  if (!row) throw new Error(`README has no row '${area}'`);
  const cell = row.split('|')[3]!;
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
}

describe('the README compatibility table', () => {
  it('lists exactly the drivers blockdev-add accepts', () => {
    const enumDef = schema.type('BlockdevDriver');
    const drivers = enumDef.meta === 'enum' ? enumDef.values : [];
    expect(qbdCell('drivers').sort()).toEqual([...drivers].sort());
  });

  it('lists exactly the formats blockdev-create can make', () => {
    const creatable = [...gsDrivers].filter(([, d]) => d.create).map(([name]) => name);
    expect(qbdCell('image creation').sort()).toEqual(creatable.sort());
  });

  it('names only commands that exist', () => {
    const commands = [...schema.commands.keys()];
    for (const area of ['block queries', 'NBD exports', 'jobs', 'backing chains']) {
      for (const word of qbdCell(area)) {
        const matches = word.endsWith('*') ? commands.filter((c) => c.startsWith(word.slice(0, -1))) : commands.filter((c) => c === word);
        expect(matches.length, `${area}: ${word}`).toBeGreaterThan(0);
      }
    }
  });
});
