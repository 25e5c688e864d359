/**
 * The shared bits of a dirty bitmap against a plain model (one boolean per
 * chunk): random marks, clears and merges across granularities give the
 * same chunks, counts and serialization; a second view of the same memory
 * (what another thread builds from the state) sees every change.
 */
import { describe, expect, it } from 'vitest';
import { dist, prng } from '../helpers/in-process-block';

/* eslint-disable @typescript-eslint/no-require-imports */
const { SharedDirtyBitmap } = require(`${dist}/block/common/shared-dirty-bitmap.js`);

class Model {
  readonly bits: boolean[];
  constructor(
    readonly length: number,
    readonly granularity: number,
  ) {
    this.bits = new Array(Math.ceil(length / granularity)).fill(false);
  }
  mark(offset: number, bytes: number): void {
    const end = Math.min(this.bits.length, Math.ceil((offset + bytes) / this.granularity));
    for (let c = Math.floor(offset / this.granularity); c < end; c++) this.bits[c] = true;
  }
  serialize(): Buffer {
    const out = Buffer.alloc(Math.ceil(this.bits.length / 64) * 8);
    this.bits.forEach((b, i) => {
      if (b) out[i >> 3]! |= 1 << (i & 7);
    });
    return out;
  }
}

describe('shared dirty bitmap bits', () => {
  it('agree with a model of chunks under random marks and chunk clears, seen from a second view', () => {
    const rand = prng(7);
    for (const [length, granularity] of [[10_000_000, 512], [1 << 20, 65536], [12345, 4096], [64 * 512 + 1, 512]] as const) {
      const bm = SharedDirtyBitmap.create(length, granularity, true);
      const other = SharedDirtyBitmap.from(bm.state);
      const model = new Model(length, granularity);
      for (let i = 0; i < 300; i++) {
        const off = Math.floor(rand() * length);
        const bytes = 1 + Math.floor(rand() * Math.min(length - off, 40 * granularity));
        if (rand() < 0.8) {
          bm.mark(off, bytes);
          model.mark(off, bytes);
        } else {
          const first = Math.floor(off / granularity);
          const end = Math.min(model.bits.length, first + Math.floor(rand() * 70));
          other.clearChunks(first, end);
          for (let c = first; c < end; c++) model.bits[c] = false;
        }
      }
      expect(Buffer.compare(other.serialize(), model.serialize())).toBe(0);
      expect(other.count()).toBe(model.bits.filter(Boolean).length * granularity);
      const firstDirty = model.bits.indexOf(true);
      expect(bm.nextDirty(0)).toBe(firstDirty);
      if (firstDirty >= 0) {
        const clean = model.bits.indexOf(false, firstDirty);
        expect(bm.nextClean(firstDirty)).toBe(clean < 0 ? model.bits.length : clean);
      }
    }
  });

  it('merges across granularities as covering chunks, and round-trips through its serialization', () => {
    const length = 3 << 20;
    const fine = SharedDirtyBitmap.create(length, 512, true);
    const coarse = SharedDirtyBitmap.create(length, 65536, true);
    fine.mark(100, 1);
    fine.mark(70_000, 600);
    coarse.merge(fine);
    expect(coarse.count()).toBe(2 * 65536);
    const back = SharedDirtyBitmap.create(length, 512, true);
    back.merge(coarse);
    expect(back.count()).toBe(2 * 65536);
    const copy = SharedDirtyBitmap.create(length, 512, true);
    copy.deserialize(back.serialize());
    expect(copy.serialize()).toEqual(back.serialize());
    const grown = back.resized(length + 65536);
    expect(grown.count()).toBe(back.count());
    expect(grown.length).toBe(length + 65536);
  });

  it('stops recording when disabled, for every view', () => {
    const bm = SharedDirtyBitmap.create(1 << 20, 4096, true);
    const other = SharedDirtyBitmap.from(bm.state);
    bm.recording = false;
    expect(other.recording).toBe(false);
    other.recording = true;
    expect(bm.recording).toBe(true);
  });
});
