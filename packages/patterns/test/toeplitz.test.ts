import { compileMask } from '@tessera/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  causal,
  dilated,
  exponentialStride,
  full,
  primeStride,
  slidingWindow,
  strided,
} from '../src/index.js';
import { checkLayout, checkMask, ctxOf, RUNS, sizes } from './helpers.js';

const POWERS_OF_TWO = new Set(Array.from({ length: 31 }, (_, k) => 2 ** k));
const PRIMES = [2, 3, 5, 7, 11, 13];

describe('full and causal', () => {
  it('full unmasks every pair', () => {
    fc.assert(
      fc.property(sizes(), (s) => checkMask(full(), ctxOf(s), () => true)),
      { ...RUNS, seed: 101 },
    );
  });

  it('causal unmasks kv ≤ q', () => {
    fc.assert(
      fc.property(sizes(), (s) => checkMask(causal(), ctxOf(s), (_h, q, kv) => kv <= q)),
      { ...RUNS, seed: 102 },
    );
  });
});

describe('sliding windows', () => {
  it('causal window: the query and the w − 1 keys before it', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 40 }), (s, w) => {
        checkMask(slidingWindow(w), ctxOf(s), (_h, q, kv) => kv <= q && kv > q - w);
      }),
      { ...RUNS, seed: 103 },
    );
  });

  it('symmetric window: w − 1 keys on each side', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 40 }), (s, w) => {
        checkMask(slidingWindow(w, { causal: false }), ctxOf(s), (_h, q, kv) => {
          const keys = new Set<number>();
          for (let t = -(w - 1); t <= w - 1; t++) keys.add(q + t);
          return keys.has(kv);
        });
      }),
      { ...RUNS, seed: 104 },
    );
  });

  it('dilated window: keys q, q − d, …, q − (w − 1)d (and mirrored when symmetric)', () => {
    fc.assert(
      fc.property(
        sizes(),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 9 }),
        fc.boolean(),
        (s, w, d, isCausal) => {
          const ref = (_h: number, q: number, kv: number): boolean => {
            for (let k = 0; k < w; k++) {
              if (kv === q - k * d) return true;
              if (!isCausal && kv === q + k * d) return true;
            }
            return false;
          };
          checkMask(dilated(w, d, { causal: isCausal }), ctxOf(s), ref);
        },
      ),
      { ...RUNS, seed: 105 },
    );
  });

  it('per-head windows and dilations give one layout slice per head', () => {
    fc.assert(
      fc.property(
        sizes(60),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 6 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.boolean(),
        (s, perHead, isCausal) => {
          const ws = perHead.map(([w]) => w);
          const ds = perHead.map(([, d]) => d);
          const ctx = ctxOf(s, perHead.length);
          const ref = (h: number, q: number, kv: number): boolean => {
            const off = isCausal ? q - kv : Math.abs(q - kv);
            const [w, d] = perHead[h] as [number, number];
            return off >= 0 && off % d === 0 && off / d < w;
          };
          checkMask(dilated(ws, ds, { causal: isCausal }), ctx, ref);
          checkMask(dilated(3, Int32Array.from(ds), { causal: isCausal }), ctx, (h, q, kv) => {
            const off = isCausal ? q - kv : Math.abs(q - kv);
            const d = ds[h] as number;
            return off >= 0 && off % d === 0 && off / d < 3;
          });
          checkMask(slidingWindow(ws, { causal: isCausal }), ctx, (h, q, kv) =>
            isCausal ? kv <= q && q - kv < (ws[h] as number) : Math.abs(q - kv) < (ws[h] as number),
          );
          if (perHead.length > 1) expect(dilated(ws, ds).layout?.(ctx).heads).toBe(perHead.length);
        },
      ),
      { numRuns: 80, seed: 106 },
    );
  });
});

describe('strides', () => {
  it('fixed stride: the local window of `stride` keys plus every stride-th key', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 30 }), fc.boolean(), (s, stride, isCausal) => {
        fc.pre(stride < s.seqKV);
        const ref = (_h: number, q: number, kv: number): boolean => {
          if (isCausal && kv > q) return false;
          const dist = Math.abs(q - kv);
          return dist < stride || Number.isInteger(dist / stride);
        };
        checkMask(strided(stride, { causal: isCausal }), ctxOf(s), ref);
      }),
      { ...RUNS, seed: 107 },
    );
  });

  it('exponential stride: offsets 0 and the powers of two', () => {
    fc.assert(
      fc.property(sizes(100), fc.boolean(), (s, isCausal) => {
        const ref = (_h: number, q: number, kv: number): boolean => {
          if (isCausal && kv > q) return false;
          const dist = Math.abs(q - kv);
          return dist === 0 || POWERS_OF_TWO.has(dist);
        };
        checkMask(exponentialStride({ causal: isCausal }), ctxOf(s), ref);
      }),
      { ...RUNS, seed: 108 },
    );
  });

  it('exponential stride stays exact for offsets near 2^31', () => {
    const m = exponentialStride();
    const f = compileMask(m);
    const big = 2 ** 31 - 1;
    expect(f(0, 0, 2 ** 30, 0)).toBe(true);
    expect(f(0, 0, 2 ** 30, 1)).toBe(false);
    expect(f(0, 0, big, big - 2 ** 30)).toBe(true);
    expect(f(0, 0, big, big - 2 ** 29 - 1)).toBe(false);
    expect(f(0, 0, big, 0)).toBe(false);
    // The layout of a sparse slab of a 2^30-long sequence, without touching its elements.
    const layout = m.layout?.({
      seqQ: 2 ** 30 + 1,
      seqKV: 2 ** 30 + 1,
      blockQ: 2 ** 30,
      blockKV: 2 ** 29,
      batch: 1,
      headsQ: 1,
    });
    // Q block 1 holds only q = 2^30: it sees kv = 0, kv = 2^29 and itself.
    expect(Array.from(layout?.kvBlocks ?? [])).toEqual([0, 1, 0, 1, 2]);
    expect(Array.from(layout?.full ?? [])).toEqual([0, 0, 0, 0, 1]);
  });

  it('prime strides: offsets that are multiples of one of the primes', () => {
    fc.assert(
      fc.property(
        sizes(),
        fc.uniqueArray(fc.constantFrom(...PRIMES), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (s, primes, isCausal) => {
          fc.pre(Math.max(...primes) < s.seqKV);
          const ref = (_h: number, q: number, kv: number): boolean => {
            if (isCausal && kv > q) return false;
            const dist = Math.abs(q - kv);
            return primes.some((p) => dist % p === 0);
          };
          checkMask(primeStride(primes, { causal: isCausal }), ctxOf(s), ref);
        },
      ),
      { ...RUNS, seed: 109 },
    );
  });

  it('the layout check catches an off-by-one layout (the harness has teeth)', () => {
    const wrong = { ...slidingWindow(4, { causal: true }), layout: slidingWindow(5).layout };
    const ctx = ctxOf({ seqQ: 20, seqKV: 20, blockQ: 1, blockKV: 1 });
    expect(() => checkLayout(wrong, ctx)).toThrow(/analytic vs exact/);
  });
});
