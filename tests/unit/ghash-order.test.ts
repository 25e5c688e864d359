import { it, expect } from 'vitest';
import { GHashOrder } from '../../src/qom/ghash-order';
function shown(ops: string[]): string[] {
  const g = new GHashOrder();
  for (const op of ops) op.startsWith('-') ? g.delete(op.slice(1)) : g.add(op);
  return g.order().reverse();
}
it('matches', () => {
  expect(shown(['io0', 'az', 'al'])).toEqual(['io0', 'al', 'az']);
  expect(shown(['m', 'rb', 'n0', 'mem'])).toEqual(['mem', 'm', 'n0', 'rb']);
  expect(shown(['m','rb','n0','mem','f0','s1','s2','-n0','n0','r2','r3','f1','f2','s3','s4','s5','s6','s8','st','bad id','pt'])).toEqual(['f0','s5','s2','bad id','f2','n0','s4','r3','s1','m','st','s6','f1','pt','s3','rb','r2','mem','s8']);
  expect(shown(['m','m2','rb','st0','t1','st2'])).toEqual(['t1','st0','m','m2','rb','st2']);
  expect(shown(['m','m2','rb','st0','t1','st2','-rb','rb'])).toEqual(['t1','st0','m','m2','rb','st2']);
  expect(shown(['x0','p0','x1'])).toEqual(['p0','x0','x1']);
  expect(shown(['objects','chardevs'])).toEqual(['objects','chardevs']);
});
