import {
  type AttentionConfig,
  BlockLayoutBuilder,
  ceilDiv,
  defineAttention,
  hash,
  lit,
  maskMod,
  scoreMod,
  tensor,
  where,
} from '@tessera/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { denseAttention } from './dense.js';
import { expectClose, inputsFor } from './util.js';

const backend = await createCpuBackend();

const causal = maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });
const windowed = (w: number) =>
  maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(w)), { name: `window(${w})` });
const dilated = maskMod(({ q, kv }) => q.sub(kv).mod(2).eq(0).and(q.sub(kv).abs().lt(9)), {
  name: 'dilated',
});
const randomMask = maskMod(({ q, kv }) => hash(7, q, kv).lt(0.3).or(q.eq(kv)), { name: 'random' });
const perHead = maskMod(({ h, q, kv }) => hash(h, q, kv).lt(0.4), { name: 'per-head random' });
const documents = (ids: Int32Array, seq: number) => {
  const t = tensor(ids);
  return maskMod(({ b, q, kv }) => t.at(b.mul(seq).add(q)).eq(t.at(b.mul(seq).add(kv))), {
    name: 'documents',
  });
};
const alibi = (heads: number) => {
  const slopes = tensor(
    Float32Array.from({ length: heads }, (_, h) => 2 ** (-(8 * (h + 1)) / heads)),
  );
  return scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).abs().toFloat())), {
    name: 'alibi',
  });
};
const softcap = (cap: number) =>
  scoreMod(({ score }) => score.div(cap).tanh().mul(cap), { name: `softcap(${cap})` });
const relBias = (n: number) => {
  const table = tensor(Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5));
  return scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(n >> 1))), {
    name: 'relative bias',
  });
};

const docIds = Int32Array.from(
  { length: 2 * 23 },
  (_, i) => Math.floor((i % 23) / 6) + (i < 23 ? 0 : 10),
);

const cases: [string, AttentionConfig, number?][] = [
  ['MHA, no mask, batch 2', { batch: 2, headsQ: 3, seqQ: 9, headDim: 5 }],
  [
    'GQA causal, 4x4 blocks',
    {
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 13,
      headDim: 8,
      mask: causal,
      tiling: { blockQ: 4, blockKV: 4 },
    },
  ],
  [
    'MQA sliding window',
    {
      batch: 1,
      headsQ: 3,
      headsKV: 1,
      seqQ: 37,
      headDim: 6,
      mask: windowed(5),
      tiling: { blockQ: 8, blockKV: 8 },
    },
  ],
  [
    'seqQ < seqKV, headDimV != headDim',
    {
      batch: 1,
      headsQ: 2,
      seqQ: 11,
      seqKV: 29,
      headDim: 4,
      headDimV: 7,
      mask: maskMod(({ q, kv }) => kv.le(q.add(18))),
      tiling: { blockQ: 4, blockKV: 6 },
    },
  ],
  [
    'seqQ > seqKV, bshd',
    {
      batch: 2,
      headsQ: 2,
      seqQ: 31,
      seqKV: 10,
      headDim: 3,
      layout: 'bshd',
      mask: causal,
      tiling: { blockQ: 7, blockKV: 3 },
    },
  ],
  [
    'bshd dilated, GQA',
    {
      batch: 2,
      headsQ: 4,
      headsKV: 2,
      seqQ: 25,
      headDim: 6,
      headDimV: 3,
      layout: 'bshd',
      mask: dilated,
      tiling: { blockQ: 5, blockKV: 3 },
    },
  ],
  [
    'random hash mask',
    {
      batch: 1,
      headsQ: 2,
      seqQ: 30,
      headDim: 4,
      mask: randomMask,
      tiling: { blockQ: 8, blockKV: 8 },
    },
  ],
  [
    'per-head mask (reads h)',
    {
      batch: 1,
      headsQ: 3,
      headsKV: 1,
      seqQ: 20,
      headDim: 4,
      mask: perHead,
      tiling: { blockQ: 4, blockKV: 4 },
    },
  ],
  [
    'documents per batch (reads b, i32 tensor)',
    {
      batch: 2,
      headsQ: 2,
      seqQ: 23,
      headDim: 4,
      mask: documents(docIds, 23),
      tiling: { blockQ: 4, blockKV: 4 },
    },
  ],
  [
    'ALiBi + causal (f32 tensor)',
    { batch: 1, headsQ: 4, headsKV: 2, seqQ: 19, headDim: 8, mask: causal, scoreMod: alibi(4) },
  ],
  [
    'softcap, strong logits',
    { batch: 1, headsQ: 2, seqQ: 17, headDim: 16, scale: 2, scoreMod: softcap(5) },
  ],
  [
    'relative bias table with out-of-range loads',
    { batch: 1, headsQ: 1, seqQ: 21, headDim: 4, scoreMod: relBias(15), mask: windowed(12) },
  ],
  ['negative scale', { batch: 1, headsQ: 2, seqQ: 9, headDim: 4, scale: -0.7, mask: causal }],
  ['f16', { batch: 1, headsQ: 2, seqQ: 15, headDim: 8, dtype: 'f16', mask: causal }, 3],
  [
    'bf16',
    { batch: 1, headsQ: 2, headsKV: 1, seqQ: 15, headDim: 8, dtype: 'bf16', mask: windowed(4) },
    3,
  ],
  ['seq 1', { batch: 1, headsQ: 2, seqQ: 1, headDim: 3, mask: causal }],
];

describe('softmax attention against the dense reference', () => {
  for (const [name, config, amp] of cases) {
    it(name, async () => {
      const spec = defineAttention(config);
      const inputs = inputsFor(spec, name.length, amp ?? 1);
      const want = denseAttention(spec, inputs);
      expectClose(await backend.run(spec, inputs), want, 1e-6);
      expectClose(await backend.run(spec, inputs, { strategy: 'naive' }), want, 1e-6);
      expectClose(await backend.run(spec, inputs, { blockQ: 3, blockKV: 5 }), want, 1e-6);
    });
  }

  it('f16 and bf16 round the inputs before computing', async () => {
    const base = { batch: 1, headsQ: 1, seqQ: 8, headDim: 8 } as const;
    const f32 = defineAttention(base);
    const inputs = inputsFor(f32, 3, 3);
    const full = await backend.run(f32, inputs);
    for (const dtype of ['f16', 'bf16'] as const) {
      const got = await backend.run(defineAttention({ ...base, dtype }), inputs);
      expect(got.out).not.toEqual(full.out);
      expectClose(got, full, dtype === 'f16' ? 2e-3 : 2e-2);
    }
  });

  it('agrees at random shapes, masks and block sizes (property)', async () => {
    const masks = [undefined, causal, windowed(3), dilated, randomMask, perHead];
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          batch: fc.integer({ min: 1, max: 2 }),
          group: fc.integer({ min: 1, max: 3 }),
          headsKV: fc.integer({ min: 1, max: 2 }),
          seqQ: fc.integer({ min: 1, max: 24 }),
          seqKV: fc.integer({ min: 1, max: 24 }),
          headDim: fc.integer({ min: 1, max: 9 }),
          headDimV: fc.integer({ min: 1, max: 5 }),
          layout: fc.constantFrom('bhsd' as const, 'bshd' as const),
          mask: fc.integer({ min: 0, max: masks.length - 1 }),
          mod: fc.constantFrom(0, 1, 2),
          blockQ: fc.integer({ min: 1, max: 9 }),
          blockKV: fc.integer({ min: 1, max: 9 }),
          seed: fc.integer({ min: 0, max: 1000 }),
        }),
        async (c) => {
          const headsQ = c.group * c.headsKV;
          const spec = defineAttention({
            batch: c.batch,
            headsQ,
            headsKV: c.headsKV,
            seqQ: c.seqQ,
            seqKV: c.seqKV,
            headDim: c.headDim,
            headDimV: c.headDimV,
            layout: c.layout,
            mask: masks[c.mask],
            scoreMod: [undefined, alibi(headsQ), softcap(2)][c.mod],
          });
          const inputs = inputsFor(spec, c.seed);
          const want = denseAttention(spec, inputs);
          expectClose(await backend.run(spec, inputs, c), want, 1e-6);
          expectClose(await backend.run(spec, inputs, { strategy: 'naive' }), want, 1e-6);
        },
      ),
      { numRuns: 60, seed: 4242 },
    );
  });
});

describe('hand-computed values', () => {
  // q0 = (1, 0), q1 = (0, 2); k0 = (1, 0), k1 = (0, 1); v0 = (1, 2), v1 = (3, -1); scale 1.
  const inputs = {
    q: Float32Array.of(1, 0, 0, 2),
    k: Float32Array.of(1, 0, 0, 1),
    v: Float32Array.of(1, 2, 3, -1),
  };
  const e = Math.E;
  const e2 = Math.E ** 2;

  it('2×2 without mask', async () => {
    const spec = defineAttention({ batch: 1, headsQ: 1, seqQ: 2, headDim: 2, scale: 1 });
    for (const strategy of ['tiled', 'naive'] as const) {
      const { out, lse } = await backend.run(spec, inputs, { strategy });
      // Row 0: scores (1, 0); row 1: scores (0, 2).
      expect(out[0]).toBeCloseTo((e * 1 + 3) / (1 + e), 6);
      expect(out[1]).toBeCloseTo((e * 2 - 1) / (1 + e), 6);
      expect(out[2]).toBeCloseTo((1 + e2 * 3) / (1 + e2), 6);
      expect(out[3]).toBeCloseTo((2 - e2) / (1 + e2), 6);
      expect(lse[0]).toBeCloseTo(1.3132616875182228, 6); // ln(1 + e)
      expect(lse[1]).toBeCloseTo(2.1269280110429727, 6); // ln(1 + e²)
    }
  });

  it('2×2 causal: row 0 sees only key 0', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 2,
      headDim: 2,
      scale: 1,
      mask: causal,
    });
    const { out, lse } = await backend.run(spec, inputs);
    expect(Array.from(out.subarray(0, 2))).toEqual([1, 2]);
    expect(lse[0]).toBe(1);
    expect(out[2]).toBeCloseTo((1 + e2 * 3) / (1 + e2), 6);
  });

  it('logits of magnitude 1e4 neither overflow nor underflow', async () => {
    const spec = defineAttention({ batch: 1, headsQ: 1, seqQ: 2, seqKV: 2, headDim: 1, scale: 1 });
    // Row 0: scores 1e4 and 1e4 - ln 3 (as f32); row 1: -1e4 and about -1e4 + ln 3.
    const k = Float32Array.of(100, 100 - Math.log(3) / 100);
    const q = Float32Array.of(100, -100);
    const v = Float32Array.of(1, 5);
    for (const strategy of ['tiled', 'naive'] as const) {
      const { out, lse } = await backend.run(spec, { q, k, v }, { strategy });
      const s0 = [100 * k[0], 100 * k[1]];
      const d0 = s0[1] - s0[0];
      expect(out[0]).toBeCloseTo((1 + 5 * Math.exp(d0)) / (1 + Math.exp(d0)), 5);
      expect(out[0]).toBeCloseTo(2, 2); // weights 3/4, 1/4
      expect(lse[0]).toBeCloseTo(s0[0] + Math.log1p(Math.exp(d0)), 2);
      const s1 = [-100 * k[0], -100 * k[1]];
      const d1 = s1[0] - s1[1];
      expect(out[1]).toBeCloseTo((5 + 1 * Math.exp(d1)) / (1 + Math.exp(d1)), 5);
      expect(lse[1]).toBeCloseTo(s1[1] + Math.log1p(Math.exp(d1)), 2);
      expect(Math.abs(lse[0])).toBeGreaterThan(9999);
    }
  });
});

describe('masked rows and non-finite scores', () => {
  it('a fully masked row gives out = 0 and lse = -Infinity, never NaN', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 10,
      headDim: 4,
      mask: maskMod(({ q, kv }) => q.mod(3).ne(0).and(kv.le(q))),
      tiling: { blockQ: 4, blockKV: 4 },
    });
    const inputs = inputsFor(spec, 1);
    for (const strategy of ['tiled', 'naive'] as const) {
      const { out, lse } = await backend.run(spec, inputs, { strategy });
      for (let h = 0; h < 2; h++) {
        for (let q = 0; q < 10; q++) {
          const row = out.subarray((h * 10 + q) * 4, (h * 10 + q + 1) * 4);
          if (q % 3 === 0) {
            expect(lse[h * 10 + q]).toBe(Number.NEGATIVE_INFINITY);
            expect(Array.from(row)).toEqual([0, 0, 0, 0]);
          } else {
            expect(Number.isFinite(lse[h * 10 + q])).toBe(true);
            expect(row.every(Number.isFinite)).toBe(true);
          }
        }
      }
      expectClose({ out, lse }, denseAttention(spec, inputs), 1e-6);
    }
  });

  it('a score modification giving -Infinity masks that pair', async () => {
    const base = { batch: 1, headsQ: 1, seqQ: 6, headDim: 4 } as const;
    // log(0) = -Infinity at kv = 0 and for every key of row 2.
    const minusInf = scoreMod(({ score, q, kv }) =>
      where(kv.eq(0).or(q.eq(2)), lit(0, 'f32'), lit(1, 'f32'))
        .log()
        .add(score),
    );
    const spec = defineAttention({ ...base, scoreMod: minusInf });
    const masked = defineAttention({ ...base, mask: maskMod(({ kv }) => kv.ne(0)) });
    const inputs = inputsFor(spec, 9);
    for (const strategy of ['tiled', 'naive'] as const) {
      const got = await backend.run(spec, inputs, { strategy });
      const want = await backend.run(masked, inputs, { strategy });
      expect(got.lse[2]).toBe(Number.NEGATIVE_INFINITY);
      expect(Array.from(got.out.subarray(8, 12))).toEqual([0, 0, 0, 0]);
      expect(got.lse[3]).toBeCloseTo(want.lse[3], 6);
      expect(Array.from(got.out.subarray(12))).toEqual(Array.from(want.out.subarray(12)));
    }
  });

  it('rejects NaN and +Infinity from a score modification with InputError', async () => {
    const base = { batch: 1, headsQ: 1, seqQ: 5, headDim: 4 } as const;
    const nan = defineAttention({
      ...base,
      scoreMod: scoreMod(({ score }) => score.sub(10).log(), { name: 'log' }),
    });
    const inf = defineAttention({
      ...base,
      scoreMod: scoreMod(({ score }) => score.add(10).mul(1e30).exp(), { name: 'blowup' }),
    });
    const inputs = inputsFor(nan, 2);
    for (const strategy of ['tiled', 'naive'] as const) {
      await expect(backend.run(nan, inputs, { strategy })).rejects.toThrow(
        /score modification 'log' gave NaN at b=0, h=0, q=0, kv=0/,
      );
      await expect(backend.run(inf, inputs, { strategy })).rejects.toThrow(/gave Infinity/);
    }
    const huge = defineAttention({ ...base, scale: 1.5e308 });
    const ones = { q: new Float32Array(20).fill(1), k: new Float32Array(20).fill(1), v: inputs.v };
    await expect(backend.run(huge, ones)).rejects.toThrow(/score scale·q·k is Infinity/);
  });
});

describe('the tiled strategy walks the block layout', () => {
  const n = 12;
  const block = 4;
  const layoutOf =
    (full: boolean, diagonalOnly: boolean) => (ctx: Parameters<typeof causalLayout>[0]) =>
      causalLayout(ctx, full, diagonalOnly);
  function causalLayout(
    ctx: ConstructorParameters<typeof BlockLayoutBuilder>[0],
    full: boolean,
    diagonalOnly: boolean,
  ) {
    const b = new BlockLayoutBuilder(ctx);
    for (let i = 0; i < ceilDiv(ctx.seqQ, ctx.blockQ); i++) {
      for (let j = diagonalOnly ? i : 0; j <= i; j++) b.push(j, full);
      b.endRow();
    }
    return b.finish();
  }
  const base = {
    batch: 1,
    headsQ: 1,
    seqQ: n,
    headDim: 4,
    tiling: { blockQ: block, blockKV: block },
  };

  it('skips the per-element mask in blocks marked full (the layout is trusted)', async () => {
    // A deliberately wrong layout: causal blocks, all claimed full. Tiled then attends to the
    // whole lower block triangle; naive evaluates the mask per element.
    const lie = maskMod(({ q, kv }) => q.ge(kv), { layout: layoutOf(true, false) });
    const spec = defineAttention({ ...base, mask: lie });
    const inputs = inputsFor(spec, 5);
    const blockCausal = defineAttention({
      ...base,
      mask: maskMod(({ q, kv }) => q.div(block).ge(kv.div(block))),
    });
    expectClose(await backend.run(spec, inputs), denseAttention(blockCausal, inputs), 1e-6);
    expectClose(
      await backend.run(spec, inputs, { strategy: 'naive' }),
      denseAttention(spec, inputs),
      1e-6,
    );
  });

  it('visits only the listed blocks', async () => {
    const diag = maskMod(({ q, kv }) => q.ge(kv), { layout: layoutOf(false, true) });
    const spec = defineAttention({ ...base, mask: diag });
    const inputs = inputsFor(spec, 6);
    const diagonalCausal = defineAttention({
      ...base,
      mask: maskMod(({ q, kv }) => q.ge(kv).and(q.div(block).eq(kv.div(block)))),
    });
    expectClose(await backend.run(spec, inputs), denseAttention(diagonalCausal, inputs), 1e-6);
  });
});
