/**
 * GHashOrder against listings qemu-storage-daemon 7.2 printed: the children
 * of /objects and /chardevs as qom-list showed them after the same adds and
 * removes (a removal is written `-name`). The long sequence grows the table
 * twice and re-adds a removed name.
 */
import { describe, expect, it } from 'vitest';
import { GHashOrder, gStrHash } from '../../src/qom/ghash-order';

/** The order qom-list shows: the table's order, reversed. */
function shown(ops: string[]): string[] {
  const g = new GHashOrder();
  for (const op of ops) {
    if (op.startsWith('-')) g.delete(op.slice(1));
    else g.add(op);
  }
  return g.order().reverse();
}

describe('GLib hash table order', () => {
  it('hashes as g_str_hash does', () => {
    expect(gStrHash('')).toBe(5381);
    expect(gStrHash('a')).toBe(5381 * 33 + 97);
  });

  it('lists a few names as the reference does', () => {
    expect(shown(['io0', 'az', 'al'])).toEqual(['io0', 'al', 'az']);
    expect(shown(['m', 'rb', 'n0', 'mem'])).toEqual(['mem', 'm', 'n0', 'rb']);
    expect(shown(['x0', 'p0', 'x1'])).toEqual(['p0', 'x0', 'x1']);
    expect(shown(['objects', 'chardevs'])).toEqual(['objects', 'chardevs']);
  });

  it('follows growth, removal and re-addition as the reference does', () => {
    const ops = ['m', 'rb', 'n0', 'mem', 'f0', 's1', 's2', '-n0', 'n0', 'r2', 'r3', 'f1', 'f2', 's3', 's4', 's5', 's6', 's8', 'st', 'bad id', 'pt'];
    expect(shown(ops)).toEqual(['f0', 's5', 's2', 'bad id', 'f2', 'n0', 's4', 'r3', 's1', 'm', 'st', 's6', 'f1', 'pt', 's3', 'rb', 'r2', 'mem', 's8']);
    expect(shown(['m', 'm2', 'rb', 'st0', 't1', 'st2'])).toEqual(['t1', 'st0', 'm', 'm2', 'rb', 'st2']);
    expect(shown(['m', 'm2', 'rb', 'st0', 't1', 'st2', '-rb', 'rb'])).toEqual(['t1', 'st0', 'm', 'm2', 'rb', 'st2']);
  });

  it('ignores a second add and the removal of a name it does not hold', () => {
    const g = new GHashOrder();
    g.add('a');
    g.add('a');
    g.delete('b');
    expect(g.order()).toEqual(['a']);
    expect(g.has('a')).toBe(true);
    g.delete('a');
    expect(g.has('a')).toBe(false);
    expect(g.order()).toEqual([]);
  });
});
