import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockDiagonal, chunkedCausal, document, globalTokens, prefixLM } from '../src/index.js';
import { checkMask, ctxOf, RUNS, sizes } from './helpers.js';

describe('global tokens', () => {
  it('the first n tokens attend to all and are attended by all', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 80 }), (s, n) => {
        fc.pre(n <= Math.max(s.seqQ, s.seqKV));
        checkMask(globalTokens(n), ctxOf(s), (_h, q, kv) => q < n || kv < n);
      }),
      { ...RUNS, seed: 201 },
    );
  });

  it('listed tokens, inline (few runs) and as a table (many runs)', () => {
    fc.assert(
      fc.property(
        sizes(),
        fc.uniqueArray(fc.integer({ min: 0, max: 79 }), { minLength: 1, maxLength: 30 }),
        (s, tokens) => {
          fc.pre(Math.max(...tokens) < Math.max(s.seqQ, s.seqKV));
          const g = new Set(tokens);
          checkMask(globalTokens(tokens), ctxOf(s), (_h, q, kv) => g.has(q) || g.has(kv));
        },
      ),
      { ...RUNS, seed: 202 },
    );
  });

  it('uses a table only past 8 runs', () => {
    expect(globalTokens([1, 3, 5]).expr.node.op).toBe('binary');
    const scattered = Array.from({ length: 12 }, (_, i) => 3 * i);
    expect(JSON.stringify(globalTokens(scattered).expr.node)).toContain('"load"');
  });
});

describe('prefix-LM', () => {
  it('keys before the prefix are seen by all; the rest causally', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 0, max: 90 }), (s, p) => {
        checkMask(prefixLM(p), ctxOf(s), (_h, q, kv) => kv < p || kv <= q);
      }),
      { ...RUNS, seed: 203 },
    );
  });
});

describe('chunks', () => {
  it('block-diagonal: same chunk', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 30 }), (s, c) => {
        const chunkOf = (t: number) => (t - (t % c)) / c;
        checkMask(blockDiagonal(c), ctxOf(s), (_h, q, kv) => chunkOf(q) === chunkOf(kv));
      }),
      { ...RUNS, seed: 204 },
    );
  });

  it('chunked causal: same chunk and kv ≤ q', () => {
    fc.assert(
      fc.property(sizes(), fc.integer({ min: 1, max: 30 }), (s, c) => {
        const chunkOf = (t: number) => (t - (t % c)) / c;
        checkMask(chunkedCausal(c), ctxOf(s), (_h, q, kv) => chunkOf(q) === chunkOf(kv) && kv <= q);
      }),
      { ...RUNS, seed: 205 },
    );
  });
});

describe('documents', () => {
  /** Packed documents: contiguous runs of random lengths. */
  const packed = fc
    .array(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 12 })
    .map((lengths) => Int32Array.from(lengths.flatMap((len, d) => Array(len).fill(d * 7 - 3))));
  /** Arbitrary ids: a document may come back after another one. */
  const scattered = fc
    .array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 90 })
    .map((ids) => Int32Array.from(ids));

  for (const [label, ids, seed] of [
    ['packed', packed, 206],
    ['scattered', scattered, 207],
  ] as const) {
    it(`attend within the document, optionally causal (${label} ids)`, () => {
      fc.assert(
        fc.property(sizes(), ids, fc.boolean(), (s, table, isCausal) => {
          const ctx = ctxOf({
            ...s,
            seqQ: Math.min(s.seqQ, table.length),
            seqKV: Math.min(s.seqKV, table.length),
          });
          checkMask(
            document(table, { causal: isCausal }),
            ctx,
            (_h, q, kv) => table[q] === table[kv] && (!isCausal || kv <= q),
          );
        }),
        { ...RUNS, seed },
      );
    });
  }

  it('rejects sequences longer than the ids', () => {
    const m = document(Int32Array.of(0, 0, 1, 1));
    expect(() => m.layout?.(ctxOf({ seqQ: 4, seqKV: 5, blockQ: 2, blockKV: 2 }))).toThrow(
      /ids has 4 entries but seqKV is 5/,
    );
  });
});
