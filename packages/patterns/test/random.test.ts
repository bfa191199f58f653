import { compileMask } from '@tessera/core';
import { hashUnit } from '@tessera/core/backend';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { random, stats } from '../src/index.js';
import { checkMask, ctxOf, RUNS, sizes } from './helpers.js';

const seedArb = fc.integer({ min: -2147483648, max: 2147483647 });
const unitArb = fc.constantFrom(1, 1, 2, 3, 5, 8);

/** Seed, then head when drawn per head, then the indices: the argument order the docs state. */
const args = (seed: number, perHead: boolean, h: number, a: number, b: number) =>
  perHead ? [seed, h, a, b] : [seed, a, b];

describe('random density', () => {
  it('(q, kv) is unmasked when hash(seed, ⌊q/u⌋, ⌊kv/u⌋) < p', () => {
    fc.assert(
      fc.property(
        sizes(60),
        fc.oneof(fc.constant(1), fc.double({ min: 0.01, max: 1, noNaN: true })),
        seedArb,
        unitArb,
        fc.boolean(),
        fc.integer({ min: 1, max: 3 }),
        (s, p, seed, u, isCausal, heads) => {
          const perHead = heads > 1;
          const ctx = ctxOf(s, heads);
          const mask = random({
            density: p,
            seed,
            block: u,
            causal: isCausal,
            perHead,
          });
          checkMask(mask, ctx, (h, q, kv) => {
            const qu = Math.floor(q / u);
            const ku = Math.floor(kv / u);
            if (isCausal && ku > qu) return false;
            return hashUnit(args(seed, perHead, h, qu, ku)) < Math.fround(p);
          });
        },
      ),
      { ...RUNS, seed: 301 },
    );
  });

  it('unmasks about a fraction p of the pairs, and the seed alone decides which', () => {
    const a = stats(random({ density: 0.3, seed: 7 }), 300, 300, { blockQ: 32, blockKV: 32 });
    expect(Math.abs(a.density - 0.3)).toBeLessThan(0.01);
    const f = compileMask(random({ density: 0.3, seed: 7 }));
    const g = compileMask(random({ density: 0.3, seed: 7 }));
    const other = compileMask(random({ density: 0.3, seed: 8 }));
    let same = 0;
    let differ = 0;
    for (let q = 0; q < 100; q++) {
      for (let kv = 0; kv < 100; kv++) {
        if (f(0, 0, q, kv) === g(0, 0, q, kv)) same++;
        if (f(0, 0, q, kv) !== other(0, 0, q, kv)) differ++;
      }
    }
    expect(same).toBe(10000);
    // Independent draws at p = 0.3 disagree on 2·0.3·0.7 = 42% of pairs.
    expect(differ / 10000).toBeGreaterThan(0.38);
    expect(differ / 10000).toBeLessThan(0.46);
  });
});

describe('random perRow', () => {
  /** Row qu's picks, from the definition: one per stratum [⌊iM/k⌋, ⌊(i+1)M/k⌋). */
  function picks(seed: number, perHead: boolean, h: number, qu: number, k: number, M: number) {
    const chosen = new Set<number>();
    for (let i = 0; i < k; i++) {
      const start = Math.floor((i * M) / k);
      const size = Math.floor(((i + 1) * M) / k) - start;
      if (size === 0) continue;
      const r = Math.round(hashUnit(args(seed, perHead, h, qu, i)) * 2 ** 24);
      chosen.add(start + (r % size));
    }
    return chosen;
  }

  it('each query unit picks k key units, one per stratum of its range', () => {
    fc.assert(
      fc.property(
        sizes(60),
        fc.integer({ min: 1, max: 12 }),
        seedArb,
        unitArb,
        fc.boolean(),
        fc.integer({ min: 1, max: 3 }),
        (s, k, seed, u, isCausal, heads) => {
          const perHead = heads > 1;
          const ctx = ctxOf(s, heads);
          const mask = random({
            perRow: k,
            seed,
            block: u,
            causal: isCausal,
            perHead,
            ...(isCausal ? {} : { seqKV: s.seqKV }),
          });
          const cache = new Map<string, Set<number>>();
          checkMask(mask, ctx, (h, q, kv) => {
            const qu = Math.floor(q / u);
            const M = isCausal ? qu + 1 : Math.ceil(s.seqKV / u);
            const key = `${h}/${qu}`;
            let set = cache.get(key);
            if (!set) {
              set = picks(seed, perHead, h, qu, k, M);
              cache.set(key, set);
            }
            return set.has(Math.floor(kv / u));
          });
        },
      ),
      { ...RUNS, seed: 302 },
    );
  });

  it('gives every row exactly min(k, range) distinct keys', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 120 }),
        fc.integer({ min: 1, max: 40 }),
        seedArb,
        fc.boolean(),
        (n, k, seed, isCausal) => {
          const f = compileMask(
            random({ perRow: k, seed, causal: isCausal, ...(isCausal ? {} : { seqKV: n }) }),
          );
          for (let q = 0; q < n; q++) {
            let count = 0;
            for (let kv = 0; kv < n; kv++) if (f(0, 0, q, kv)) count++;
            expect(count).toBe(Math.min(k, isCausal ? q + 1 : n));
          }
        },
      ),
      { numRuns: 60, seed: 303 },
    );
  });

  it('needs seqKV when not causal, and checks it against the layout', () => {
    expect(() => random({ perRow: 2, seed: 1 })).toThrow(/perRow without causal needs seqKV/);
    const m = random({ perRow: 2, seed: 1, seqKV: 64 });
    expect(() => m.layout?.(ctxOf({ seqQ: 64, seqKV: 32, blockQ: 16, blockKV: 16 }))).toThrow(
      /built for seqKV 64 but used with seqKV 32/,
    );
  });
});
