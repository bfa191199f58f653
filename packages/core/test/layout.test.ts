import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deriveBlockLayout, type LayoutCounters, layoutColumns } from '../src/backend-api.js';
import {
  type BlockLayout,
  BlockLayoutBuilder,
  blockLayout,
  compileJs,
  defineAttention,
  type Expr,
  exactBlockLayout,
  hash,
  type LayoutContext,
  layoutDifference,
  layoutSlice,
  layoutStats,
  maskMod,
  SpecError,
  tensor,
  vars,
} from '../src/index.js';
import { boolExpr, smallTensors } from './arbitraries.js';
import { evalRef } from './reference-eval.js';

const ctxArb = fc.record({
  seqQ: fc.integer({ min: 1, max: 90 }),
  seqKV: fc.integer({ min: 1, max: 90 }),
  blockQ: fc.integer({ min: 1, max: 24 }),
  blockKV: fc.integer({ min: 1, max: 24 }),
  batch: fc.integer({ min: 1, max: 2 }),
  headsQ: fc.integer({ min: 1, max: 3 }),
});

function maskNode(e: Expr) {
  const spec = defineAttention({
    batch: 1,
    headsQ: 1,
    seqQ: 4,
    headDim: 4,
    mask: maskMod(() => e),
  });
  return { node: spec.mask?.expr ?? null, tensors: spec.tensors.map((t) => t.data) };
}

/**
 * Checks a layout against the mask read element by element with the test's own evaluator:
 * a block listed as full has no masked element, a block not listed has no unmasked element.
 */
function checkSound(layout: BlockLayout, e: Expr, ctx: LayoutContext): void {
  const { node, tensors } = maskNode(e);
  if (!node) return;
  for (let b = 0; b < ctx.batch; b++) {
    for (let h = 0; h < ctx.headsQ; h++) {
      const s = layoutSlice(layout, b, h);
      for (let i = 0; i < layout.numQBlocks; i++) {
        const r = s * layout.numQBlocks + i;
        const listed = new Map<number, boolean>();
        for (let k = layout.rowStart[r] as number; k < (layout.rowStart[r + 1] as number); k++) {
          listed.set(layout.kvBlocks[k] as number, layout.full[k] === 1);
        }
        for (let q = i * ctx.blockQ; q < Math.min(ctx.seqQ, (i + 1) * ctx.blockQ); q++) {
          for (let kv = 0; kv < ctx.seqKV; kv++) {
            const on = evalRef(node, { b, h, q, kv, score: 0 }, tensors) as boolean;
            const j = Math.floor(kv / ctx.blockKV);
            if (on && !listed.has(j))
              throw new Error(`b${b} h${h} (${q}, ${kv}) is unmasked but block ${j} is skipped`);
            if (!on && listed.get(j))
              throw new Error(`b${b} h${h} (${q}, ${kv}) is masked but block ${j} is called full`);
          }
        }
      }
    }
  }
}

describe('derived layouts', () => {
  it('equal the per-element layout for random masks at random sizes (not block multiples)', () => {
    fc.assert(
      fc.property(boolExpr(3), ctxArb, (e, ctx) => {
        const { node, tensors } = maskNode(e);
        const derived = deriveBlockLayout(node, tensors, ctx);
        expect(layoutDifference(derived, exactBlockLayout(node, tensors, ctx))).toBeNull();
        checkSound(derived, e, ctx);
      }),
      { seed: 2024, numRuns: 250 },
    );
  });

  it('stay sound for masks over captured tensors', () => {
    fc.assert(
      fc.property(
        smallTensors.chain((ts) => fc.tuple(fc.constant(ts), boolExpr(3, ts))),
        ctxArb,
        ([, e], ctx) => {
          const { node, tensors } = maskNode(e);
          const derived = deriveBlockLayout(node, tensors, ctx);
          expect(layoutDifference(derived, exactBlockLayout(node, tensors, ctx))).toBeNull();
          checkSound(derived, e, ctx);
        },
      ),
      { seed: 77, numRuns: 150 },
    );
  });

  it('decide structured masks by interval reasoning, not per element', () => {
    const window = vars.q.ge(vars.kv).and(vars.q.sub(vars.kv).lt(1024));
    const { node } = maskNode(window);
    const N = 1 << 18;
    const ctx = { seqQ: N, seqKV: N, blockQ: 128, blockKV: 128, batch: 1, headsQ: 1 };
    const counters: LayoutCounters = { intervalEvals: 0, elementEvals: 0 };
    const layout = deriveBlockLayout(node, [], ctx, counters);
    const nq = N / 128;
    // Row i visits blocks i-8 .. i (the window's far edge and the diagonal partial, 7 full between);
    // the first 8 rows are cut short by the sequence start: 9 * nq - (8 + 7 + ... + 1).
    expect(layout.kvBlocks.length).toBe(9 * nq - 36);
    expect(layoutStats(layout, 1, 1).fullBlocks).toBe(
      7 * (nq - 8) + (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7),
    );
    // Per-element work only on the two boundary blocks of each row: far below N² = 6.9e10.
    expect(counters.elementEvals).toBeLessThanOrEqual(nq * 2 * 128 * 128);
    expect(counters.intervalEvals).toBeLessThan(nq * 4 * Math.log2(nq));
  });

  it('follow per-head and per-batch masks with one slice each', () => {
    const dil = vars.q
      .sub(vars.kv)
      .mod(vars.h.add(1))
      .eq(0)
      .and(vars.b.eq(0).or(vars.q.ge(vars.kv)));
    const ctx = { seqQ: 37, seqKV: 29, blockQ: 8, blockKV: 5, batch: 2, headsQ: 3 };
    const { node, tensors } = maskNode(dil);
    const l = deriveBlockLayout(node, tensors, ctx);
    expect([l.batches, l.heads]).toEqual([2, 3]);
    checkSound(l, dil, ctx);
  });

  it('handle document masks over a captured id tensor', () => {
    const ids = Int32Array.from({ length: 100 }, (_, i) => (i < 13 ? 0 : i < 60 ? 1 : 2));
    const docs = tensor(ids);
    const doc = docs.at(vars.q).eq(docs.at(vars.kv));
    const ctx = { seqQ: 100, seqKV: 100, blockQ: 16, blockKV: 16, batch: 1, headsQ: 1 };
    const { node, tensors } = maskNode(doc);
    const counters: LayoutCounters = { intervalEvals: 0, elementEvals: 0 };
    const l = deriveBlockLayout(node, tensors, ctx, counters);
    expect(layoutDifference(l, exactBlockLayout(node, tensors, ctx))).toBeNull();
    // Only blocks straddling a document boundary need per-element work.
    expect(counters.elementEvals).toBeLessThan((100 * 100) / 2);
  });

  it('random block masks resolve exactly at block granularity', () => {
    const B = 16;
    const rnd = hash(9, vars.q.div(B), vars.kv.div(B)).lt(0.3);
    const ctx = { seqQ: 200, seqKV: 150, blockQ: B, blockKV: B, batch: 1, headsQ: 1 };
    const { node, tensors } = maskNode(rnd);
    const counters: LayoutCounters = { intervalEvals: 0, elementEvals: 0 };
    const l = deriveBlockLayout(node, tensors, ctx, counters);
    expect(counters.elementEvals).toBe(0);
    const f = compileJs(node as never, tensors);
    for (let i = 0; i < l.numQBlocks; i++) {
      const row = Array.from(l.kvBlocks.slice(l.rowStart[i], l.rowStart[i + 1]));
      const want = Array.from({ length: l.numKVBlocks }, (_, j) => j).filter((j) =>
        f(0, 0, i * B, j * B, 0),
      );
      expect(row).toEqual(want);
    }
  });
});

describe('layouts from specs', () => {
  it('use the analytic layout a mask brings, checked against the spec shape', () => {
    const bad = maskMod(({ q, kv }) => q.ge(kv), {
      name: 'bad',
      layout: (ctx) => new BlockLayoutBuilder({ ...ctx, seqQ: ctx.seqQ + 1 }).finish(),
    });
    const spec = defineAttention({ batch: 1, headsQ: 1, seqQ: 64, headDim: 8, mask: bad });
    expect(() => blockLayout(spec)).toThrow(/rows|seqQ/);
  });
  it('default to the tiling hints and cache per block size', () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 100,
      headDim: 8,
      tiling: { blockQ: 32, blockKV: 16 },
    });
    const l = blockLayout(spec);
    expect([l.blockQ, l.blockKV, l.numQBlocks, l.numKVBlocks]).toEqual([32, 16, 4, 7]);
    expect(blockLayout(spec)).toBe(l);
    expect(blockLayout(spec, { blockQ: 64 }).numQBlocks).toBe(2);
  });
});

describe('layout builder and stats', () => {
  const ctx = { seqQ: 10, seqKV: 10, blockQ: 4, blockKV: 4, batch: 2, headsQ: 2 };
  it('rejects rows out of order and wrong row counts', () => {
    const b = new BlockLayoutBuilder(ctx);
    b.push(1, true);
    expect(() => b.push(1, true)).toThrow(SpecError);
    expect(() => b.push(3, true)).toThrow(/KV block 3 must be an integer in \(1, 3\)/);
    b.endRow();
    expect(() => b.finish()).toThrow(/layout has 1 rows, expected 3/);
  });
  it('counts computed pairs with tail blocks clipped', () => {
    const causal = maskNode(vars.q.ge(vars.kv)).node;
    const l = deriveBlockLayout(causal, [], ctx);
    const s = layoutStats(l, 2, 2);
    // Blocks visited: row0 {0}, row1 {0,1}, row2 {0,1,2}; pairs: 4*4 + 4*8 + 2*10 = 68 per (b, h).
    expect(s.visitedBlocks).toBe(6 * 4);
    expect(s.computedPairs).toBe(68 * 4);
    expect(s.fullBlocks).toBe(3 * 4);
    expect(s.density).toBeCloseTo(68 / 100, 12);
  });
});

describe('layoutColumns', () => {
  it('lists, for every KV block, exactly the Q blocks whose rows list it, ascending, with their full flags', () => {
    const spec = defineAttention({
      batch: 2,
      headsQ: 3,
      seqQ: 70,
      seqKV: 90,
      headDim: 8,
      mask: maskMod(({ b, h, q, kv }) =>
        kv.le(q.add(b.mul(7))).and(q.sub(kv).lt(h.add(1).mul(13))),
      ),
    });
    const layout = blockLayout(spec, { blockQ: 16, blockKV: 8 });
    const cols = layoutColumns(layout);
    const slices = layout.batches * layout.heads;
    const nq = layout.numQBlocks;
    const nk = layout.numKVBlocks;
    expect(slices).toBe(6);
    expect(cols.colStart.length).toBe(slices * nk + 1);
    expect(cols.qBlocks.length).toBe(layout.kvBlocks.length);
    // Independent check: the set of (slice, q block, kv block, full) from the row view.
    const fromRows = new Set<string>();
    for (let s = 0; s < slices; s++)
      for (let qb = 0; qb < nq; qb++) {
        const r = s * nq + qb;
        for (let e = layout.rowStart[r] as number; e < (layout.rowStart[r + 1] as number); e++)
          fromRows.add(`${s}:${qb}:${layout.kvBlocks[e]}:${layout.full[e]}`);
      }
    const fromCols = new Set<string>();
    for (let s = 0; s < slices; s++)
      for (let kb = 0; kb < nk; kb++) {
        const c = s * nk + kb;
        let prev = -1;
        for (let e = cols.colStart[c] as number; e < (cols.colStart[c + 1] as number); e++) {
          const qb = cols.qBlocks[e] as number;
          expect(qb).toBeGreaterThan(prev);
          prev = qb;
          fromCols.add(`${s}:${qb}:${kb}:${cols.full[e]}`);
        }
      }
    expect(fromCols).toEqual(fromRows);
    expect(layoutColumns(layout)).toBe(cols);
  });
});
