import { hashUnit } from '@tessera/core/backend';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bigBird, longformer } from '../src/index.js';
import { checkMask, ctxOf, RUNS, sizes } from './helpers.js';

describe('BigBird', () => {
  it('window blocks, global blocks and random blocks, decided per block pair', () => {
    fc.assert(
      fc.property(
        sizes(70),
        fc.integer({ min: 0, max: 3 }).map((r) => 2 * r + 1),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.integer({ min: 1, max: 3 }),
        (s, window, globalBlocks, randomBlocks, block, seed, heads) => {
          fc.pre(globalBlocks === 0 || (globalBlocks - 1) * block < Math.max(s.seqQ, s.seqKV));
          const perHead = heads > 1;
          const mask = bigBird({
            window,
            globalBlocks,
            randomBlocks,
            block,
            seed,
            seqKV: s.seqKV,
            perHead,
          });
          const keyBlocks = Math.ceil(s.seqKV / block);
          const ref = (h: number, q: number, kv: number): boolean => {
            const qb = Math.floor(q / block);
            const kb = Math.floor(kv / block);
            if (Math.abs(qb - kb) <= (window - 1) / 2) return true;
            if (qb < globalBlocks || kb < globalBlocks) return true;
            // Random blocks: one per stratum of the key blocks (see random perRow).
            for (let i = 0; i < randomBlocks; i++) {
              const start = Math.floor((i * keyBlocks) / randomBlocks);
              const size = Math.floor(((i + 1) * keyBlocks) / randomBlocks) - start;
              if (size === 0) continue;
              const r = Math.round(hashUnit(perHead ? [seed, h, qb, i] : [seed, qb, i]) * 2 ** 24);
              if (kb === start + (r % size)) return true;
            }
            return false;
          };
          checkMask(mask, ctxOf(s, heads), ref);
        },
      ),
      { ...RUNS, seed: 401 },
    );
  });

  it('validates its parameters', () => {
    const base = { window: 3, globalBlocks: 1, randomBlocks: 0, block: 4 };
    expect(() => bigBird({ ...base, window: 2 })).toThrow(/window must be an odd number/);
    expect(() => bigBird({ ...base, block: 0 })).toThrow(/block must be a positive integer/);
    expect(() => bigBird({ ...base, randomBlocks: 2, seed: 1 })).toThrow(/needs seqKV/);
    expect(() => bigBird({ ...base, randomBlocks: 2, seqKV: 64 })).toThrow(
      /seed must be an integer/,
    );
    expect(() =>
      bigBird({ ...base, globalBlocks: 9 }).layout?.(
        ctxOf({ seqQ: 32, seqKV: 32, blockQ: 8, blockKV: 8 }),
      ),
    ).toThrow(/globalBlocks \(9\) of 4 tokens exceed the sequence/);
  });
});

describe('Longformer', () => {
  it('dilated local window plus global tokens, symmetric or causal, dilation per head', () => {
    fc.assert(
      fc.property(
        sizes(70),
        fc.integer({ min: 1, max: 16 }),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }),
        fc.option(fc.uniqueArray(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 4 })),
        fc.boolean(),
        (s, window, dilations, global, isCausal) => {
          fc.pre(global === null || Math.max(...global) < Math.max(s.seqQ, s.seqKV));
          const g = new Set(global ?? []);
          const perHead = dilations.length > 1;
          const mask = longformer({
            window,
            dilation: perHead ? dilations : dilations[0],
            causal: isCausal,
            ...(global ? { global } : {}),
          });
          const ref = (h: number, q: number, kv: number): boolean => {
            if (g.has(q) || g.has(kv)) return true;
            const d = dilations[perHead ? h : 0] as number;
            // Symmetric: ⌊window/2⌋ dilated steps each side; causal: window keys back.
            const steps = isCausal ? window - 1 : Math.floor(window / 2);
            for (let k = 0; k <= steps; k++) {
              if (kv === q - k * d || (!isCausal && kv === q + k * d)) return true;
            }
            return false;
          };
          checkMask(mask, ctxOf(s, dilations.length), ref);
        },
      ),
      { ...RUNS, seed: 402 },
    );
  });

  it('names its parts', () => {
    expect(longformer({ window: 512, dilation: [1, 2], global: 2 }).name).toBe(
      'longformer(window=512, dilation=[1,2], global-tokens(2))',
    );
  });
});
