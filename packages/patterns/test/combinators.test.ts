import {
  type BlockLayout,
  BlockLayoutBuilder,
  defineMask,
  type LayoutContext,
  layoutDifference,
  type Mask,
  maskMod,
  vars,
} from '@tessera/core';
import { hashUnit } from '@tessera/core/backend';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  blockDiagonal,
  causal,
  chunkedCausal,
  difference,
  dilated,
  globalTokens,
  intersect,
  not,
  prefixLM,
  random,
  slidingWindow,
  strided,
  union,
} from '../src/index.js';
import { checkMask, ctxOf, type Ref, sizes } from './helpers.js';

interface Case {
  readonly mask: Mask;
  readonly ref: Ref;
}

/** Leaf masks with their definitions, for sequences of at least `minSeq` tokens and `heads` heads. */
function leaf(minSeq: number, heads: number): fc.Arbitrary<Case> {
  const small = fc.integer({ min: 1, max: 12 });
  const leaves: fc.Arbitrary<Case>[] = [
    fc.constant({ mask: causal(), ref: (_h, q, kv) => kv <= q }),
    fc.tuple(small, fc.boolean()).map(([w, c]) => ({
      mask: slidingWindow(w, { causal: c }),
      ref: (_h, q, kv) => (c ? kv <= q && q - kv < w : Math.abs(q - kv) < w),
    })),
    fc
      .tuple(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: heads, maxLength: heads }),
        small,
      )
      .map(([ds, w]) => ({
        mask: dilated(w, heads > 1 ? ds : (ds[0] as number), { causal: false }),
        ref: (h, q, kv) => {
          const a = Math.abs(q - kv);
          const d = ds[heads > 1 ? h : 0] as number;
          return a % d === 0 && a / d < w;
        },
      })),
    fc.integer({ min: 1, max: minSeq }).map((n) => ({
      mask: globalTokens(n),
      ref: (_h, q, kv) => q < n || kv < n,
    })),
    fc.tuple(fc.double({ min: 0.05, max: 0.95, noNaN: true }), fc.integer()).map(([p, seed]) => ({
      mask: random({ density: p, seed }),
      ref: (_h, q, kv) => hashUnit([seed, q, kv]) < Math.fround(p),
    })),
    small.map((c) => ({
      mask: blockDiagonal(c),
      ref: (_h, q, kv) => Math.floor(q / c) === Math.floor(kv / c),
    })),
    small.map((c) => ({
      mask: chunkedCausal(c),
      ref: (_h, q, kv) => Math.floor(q / c) === Math.floor(kv / c) && kv <= q,
    })),
    small.map((p) => ({ mask: prefixLM(p), ref: (_h, q, kv) => kv < p || kv <= q })),
    // A user mask with no analytic layout: the combinator derives its operand's layout.
    fc.integer({ min: 2, max: 5 }).map((m) => ({
      mask: maskMod(({ q, kv }) => q.add(kv).mod(m).eq(0)),
      ref: (_h, q, kv) => (q + kv) % m === 0,
    })),
  ];
  if (minSeq >= 2) {
    leaves.push(
      fc.integer({ min: 1, max: minSeq - 1 }).map((s) => ({
        mask: strided(s),
        ref: (_h, q, kv) => kv <= q && (q - kv < s || (q - kv) % s === 0),
      })),
    );
  }
  return fc.oneof(...leaves);
}

function tree(minSeq: number, heads: number, depth: number): fc.Arbitrary<Case> {
  if (depth === 0) return leaf(minSeq, heads);
  const sub = tree(minSeq, heads, depth - 1);
  return fc.oneof(
    { arbitrary: leaf(minSeq, heads), weight: 1 },
    {
      arbitrary: fc.array(sub, { minLength: 1, maxLength: 3 }).map((xs) => ({
        mask: union(...xs.map((x) => x.mask)),
        ref: (h: number, q: number, kv: number) => xs.some((x) => x.ref(h, q, kv)),
      })),
      weight: 2,
    },
    {
      arbitrary: fc.array(sub, { minLength: 1, maxLength: 3 }).map((xs) => ({
        mask: intersect(...xs.map((x) => x.mask)),
        ref: (h: number, q: number, kv: number) => xs.every((x) => x.ref(h, q, kv)),
      })),
      weight: 2,
    },
    {
      arbitrary: fc.tuple(sub, sub).map(([a, b]) => ({
        mask: difference(a.mask, b.mask),
        ref: (h: number, q: number, kv: number) => a.ref(h, q, kv) && !b.ref(h, q, kv),
      })),
      weight: 2,
    },
    {
      arbitrary: sub.map((a) => ({
        mask: not(a.mask),
        ref: (h: number, q: number, kv: number) => !a.ref(h, q, kv),
      })),
      weight: 1,
    },
  );
}

describe('combinators', () => {
  it('union, intersect, difference and not: exact layouts of nested combinations', () => {
    fc.assert(
      fc.property(
        sizes(60).chain((s) =>
          fc
            .integer({ min: 1, max: 3 })
            .chain((heads) =>
              tree(Math.min(s.seqQ, s.seqKV), heads, 2).map((c) => ({ s, heads, c })),
            ),
        ),
        // A bare user mask has no analytic layout to check: wrap it in a one-operand union.
        ({ s, heads, c }) =>
          checkMask(c.mask.layout ? c.mask : union(c.mask), ctxOf(s, heads), c.ref),
      ),
      { numRuns: 250, seed: 501 },
    );
  });

  it('decides blocks from the operands where it can, classifying only the undecided ones', () => {
    const ctx = ctxOf({ seqQ: 24, seqKV: 24, blockQ: 4, blockKV: 4 });
    // Operands whose layouts say every block is full, or every block partial, whatever their
    // expressions say: the combined layout shows which blocks were decided without elements.
    const claim = (full: boolean) => (c: LayoutContext) => {
      const out = new BlockLayoutBuilder(c);
      const nq = Math.ceil(c.seqQ / c.blockQ);
      const nk = Math.ceil(c.seqKV / c.blockKV);
      for (let i = 0; i < nq; i++) {
        out.pushRange(0, nk, full);
        out.endRow();
      }
      return out.finish();
    };
    const never = vars.q.lt(0);
    const claimsFull = defineMask(never, { name: 'claims-full', layout: claim(true) });
    const claimsPartial = defineMask(never, { name: 'claims-partial', layout: claim(false) });
    const causalClaimsPartial = defineMask(causal().expr, { layout: claim(false) });
    // full ∪ anything is full: taken from the operand, no element read.
    const decided = union(claimsFull, causal()).layout?.(ctx);
    expect(Array.from(decided?.full ?? [])).toEqual(Array(36).fill(1));
    // partial ∪ partial: only the elements can tell, and they give causal's exact layout.
    const undecided = union(claimsPartial, causalClaimsPartial).layout?.(ctx);
    expect(
      layoutDifference(undecided as BlockLayout, causal().layout?.(ctx) as BlockLayout),
    ).toBeNull();
    // partial ∪ empty is the partial operand's block, again without reading elements.
    const passThrough = union(
      claimsPartial,
      defineMask(never, {
        layout: (c) => {
          const out = new BlockLayoutBuilder(c);
          for (let i = 0; i < Math.ceil(c.seqQ / c.blockQ); i++) out.endRow();
          return out.finish();
        },
      }),
    ).layout?.(ctx);
    expect(passThrough?.kvBlocks.length).toBe(36);
    expect(Array.from(passThrough?.full ?? [])).toEqual(Array(36).fill(0));
  });

  it('rejects what is not a mask', () => {
    expect(() => union()).toThrow(/union: needs at least 1 masks/);
    expect(() => intersect(causal(), {} as Mask)).toThrow(/argument 1 is not a Mask/);
  });
});
