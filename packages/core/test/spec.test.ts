import { describe, expect, it } from 'vitest';
import { assertSpec } from '../src/backend-api.js';
import {
  type AttentionConfig,
  type AttentionSpec,
  blockLayout,
  defineAttention,
  estimateCost,
  groupSize,
  isAttentionSpec,
  type KernelConfig,
  kvHeadOf,
  layoutDifference,
  type Mask,
  maskMod,
  type ScoreMod,
  SpecError,
  scoreMod,
  specFromJSON,
  specToJSON,
  tensor,
  tensorSizes,
  validateInputs,
  vars,
} from '../src/index.js';

const base: AttentionConfig = {
  batch: 2,
  headsQ: 8,
  headsKV: 2,
  seqQ: 100,
  seqKV: 120,
  headDim: 64,
};

describe('defineAttention normalises', () => {
  it('fills defaults and freezes', () => {
    const s = defineAttention({ batch: 1, headsQ: 4, seqQ: 10, headDim: 16 });
    expect(s).toMatchObject({
      headsKV: 4,
      seqKV: 10,
      headDimV: 16,
      layout: 'bhsd',
      dtype: 'f32',
      scale: 0.25,
      kernel: { type: 'softmax' },
      mask: null,
      scoreMod: null,
      tensors: [],
      tiling: {},
    });
    expect(Object.isFrozen(s)).toBe(true);
    expect(Object.isFrozen(s.kernel)).toBe(true);
    expect(() => {
      (s as { batch: number }).batch = 3;
    }).toThrow(TypeError);
  });
  it('maps GQA and MQA heads', () => {
    const s = defineAttention(base);
    expect(groupSize(s)).toBe(4);
    expect([0, 3, 4, 7].map((h) => kvHeadOf(s, h))).toEqual([0, 0, 1, 1]);
    const mqa = defineAttention({ ...base, headsKV: 1 });
    expect(kvHeadOf(mqa, 7)).toBe(0);
    expect(tensorSizes(s)).toEqual({
      q: 2 * 8 * 100 * 64,
      k: 2 * 2 * 120 * 64,
      v: 2 * 2 * 120 * 64,
      out: 2 * 8 * 100 * 64,
      lse: 2 * 8 * 100,
    });
  });
  it('fills linear-kernel defaults', () => {
    const s = defineAttention({ ...base, kernel: { type: 'linear', featureMap: 'favor+' } });
    expect(s.kernel).toEqual({ type: 'linear', featureMap: 'favor+', features: 64, seed: 0 });
  });
  it('puts tensors of mask and score modification in one table, shared by identity', () => {
    const ids = tensor(Int32Array.from({ length: 120 }, (_, i) => i >> 4));
    const slopes = tensor(Float32Array.from({ length: 8 }, (_, i) => 2 ** -(i + 1)));
    const s = defineAttention({
      ...base,
      mask: maskMod(({ q, kv }) => ids.at(q).eq(ids.at(kv))),
      scoreMod: scoreMod(({ score, h, q, kv }) =>
        score.sub(slopes.at(h).mul(q.sub(kv))).add(ids.at(kv).toFloat()),
      ),
    });
    expect(s.tensors.map((t) => [t.dtype, t.length])).toEqual([
      ['i32', 120],
      ['f32', 8],
    ]);
  });
});

describe('validation messages name the field and the rule', () => {
  const cases: [
    string,
    Partial<Record<keyof AttentionConfig, unknown>> & Record<string, unknown>,
    RegExp,
  ][] = [
    ['batch 0', { batch: 0 }, /^batch must be a positive integer below 2\^31 \(got 0\)$/],
    [
      'fractional headsQ',
      { headsQ: 2.5 },
      /^headsQ must be a positive integer below 2\^31 \(got 2.5\)$/,
    ],
    [
      'headsKV not dividing',
      { headsQ: 12, headsKV: 5 },
      /^headsQ \(12\) must be a multiple of headsKV \(5\)$/,
    ],
    ['negative seqQ', { seqQ: -1 }, /^seqQ must be a positive integer/],
    ['string seqKV', { seqKV: '7' }, /^seqKV must be a positive integer below 2\^31 \(got 7\)$/],
    ['headDim 0', { headDim: 0 }, /^headDim must be a positive integer/],
    [
      'headDimV NaN',
      { headDimV: Number.NaN },
      /^headDimV must be a positive integer below 2\^31 \(got NaN\)$/,
    ],
    ['huge seq', { seqQ: 2 ** 31 }, /^seqQ must be a positive integer below 2\^31/],
    ['unknown layout', { layout: 'bsdh' }, /^layout must be one of 'bhsd', 'bshd' \(got "bsdh"\)$/],
    [
      'unknown dtype',
      { dtype: 'f64' },
      /^dtype must be one of 'f32', 'f16', 'bf16' \(got "f64"\)$/,
    ],
    [
      'infinite scale',
      { scale: Number.POSITIVE_INFINITY },
      /^scale must be finite \(got Infinity\)$/,
    ],
    ['NaN scale', { scale: Number.NaN }, /^scale must be finite \(got NaN\)$/],
    ['zero scale', { scale: 0 }, /^scale must be non-zero/],
    ['typo field', { heads: 8 }, /^unknown field 'heads' \(known: batch, headsQ/],
    [
      'mask not a Mask',
      { mask: (q: number) => q > 0 },
      /^mask must be a Mask \(from maskMod\(\) or @tessera\/patterns\)$/,
    ],
    ['scoreMod not a ScoreMod', { scoreMod: vars.score }, /^scoreMod must be a ScoreMod/],
    [
      'kernel name',
      { kernel: 'linear' },
      /^kernel must be 'softmax' or \{ type: 'linear', featureMap \}/,
    ],
    [
      'feature map',
      { kernel: { type: 'linear', featureMap: 'softplus' } },
      /^kernel.featureMap must be one of 'elu\+1', 'relu', 'favor\+', 'trig-rf' \(got "softplus"\)$/,
    ],
    [
      'fixed features',
      { kernel: { type: 'linear', featureMap: 'relu', features: 32 } },
      /^kernel.features is fixed to headDim \(64\) for feature map 'relu' \(got 32\)$/,
    ],
    [
      'features 0',
      { kernel: { type: 'linear', featureMap: 'favor+', features: 0 } },
      /^kernel.features must be a positive integer/,
    ],
    [
      'seed negative',
      { kernel: { type: 'linear', featureMap: 'favor+', seed: -1 } },
      /^kernel.seed must be an integer in \[0, 2\^32\) \(got -1\)$/,
    ],
    [
      'linear with score mod',
      {
        kernel: { type: 'linear', featureMap: 'relu' },
        scoreMod: scoreMod(({ score }) => score.mul(2), { name: 'double' }),
      },
      /^kernel 'linear' cannot apply a score modification \(got 'double'\)$/,
    ],
    [
      'linear with window',
      {
        kernel: { type: 'linear', featureMap: 'relu' },
        mask: maskMod(({ q, kv }) => q.sub(kv).lt(4), { name: 'window' }),
      },
      /^kernel 'linear' supports no mask or a causal mask only \(got mask 'window'\)$/,
    ],
    [
      'tiling typo',
      { tiling: { blockM: 64 } },
      /^unknown field 'tiling.blockM' \(known: blockQ, blockKV\)$/,
    ],
    ['tiling zero', { tiling: { blockQ: 0 } }, /^tiling.blockQ must be a positive integer/],
    [
      'too many elements',
      { batch: 1024, headsQ: 1024, headsKV: 1024, seqQ: 1 << 20, headDim: 128 },
      /^q would have \d+ elements, more than 2\^40$/,
    ],
  ];
  for (const [name, patch, message] of cases) {
    it(name, () => {
      const f = () => defineAttention({ ...base, ...patch } as AttentionConfig);
      expect(f).toThrow(SpecError);
      expect(f).toThrow(message);
    });
  }
  it('accepts a causal mask with a linear kernel', () => {
    const s = defineAttention({
      ...base,
      kernel: { type: 'linear', featureMap: 'relu' },
      mask: maskMod(({ q, kv }) => q.ge(kv)),
    });
    expect(s.mask?.name).toBe('custom');
  });
});

describe('the structural hash', () => {
  const mk = (patch: Partial<AttentionConfig> = {}) =>
    defineAttention({
      ...base,
      mask: maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' }),
      ...patch,
    });
  it('is stable: the same spec built twice hashes the same', () => {
    expect(mk().hash).toBe(mk().hash);
    expect(mk().hash).toMatch(/^[0-9a-f]{32}$/);
  });
  it('ignores key order in the config', () => {
    const a = defineAttention({ batch: 1, headsQ: 2, seqQ: 3, headDim: 4 });
    const b = defineAttention({ headDim: 4, seqQ: 3, headsQ: 2, batch: 1 });
    expect(a.hash).toBe(b.hash);
  });
  it('changes with every field', () => {
    const variants: Partial<AttentionConfig>[] = [
      { batch: 3 },
      { headsQ: 4 },
      { headsKV: 1 },
      { seqQ: 101 },
      { seqKV: 121 },
      { headDim: 32 },
      { headDimV: 32 },
      { layout: 'bshd' },
      { dtype: 'bf16' },
      { scale: 0.1 },
      { kernel: { type: 'linear', featureMap: 'relu' } },
      { kernel: { type: 'linear', featureMap: 'favor+', seed: 1 } },
      { mask: maskMod(({ q, kv }) => q.gt(kv), { name: 'causal' }) },
      { mask: maskMod(({ q, kv }) => q.ge(kv), { name: 'other-name' }) },
      { scoreMod: scoreMod(({ score }) => score.mul(2)) },
      { tiling: { blockQ: 128 } },
    ];
    const hashes = new Set([mk().hash, ...variants.map((v) => mk(v).hash)]);
    expect(hashes.size).toBe(variants.length + 1);
  });
  it('does not depend on captured tensor contents, only on their type and length', () => {
    const withIds = (ids: Int32Array) =>
      defineAttention({
        ...base,
        mask: maskMod(({ q, kv }) => tensor(ids).at(q).eq(tensor(ids).at(kv))),
      });
    const a = withIds(new Int32Array(120).fill(1));
    const b = withIds(Int32Array.from({ length: 120 }, (_, i) => i % 3));
    const c = withIds(new Int32Array(121));
    expect(a.hash).toBe(b.hash);
    expect(a.hash).not.toBe(c.hash);
  });
});

describe('JSON round trip', () => {
  it('rebuilds an equal spec with tensors and an equivalent layout', () => {
    const ids = Int32Array.from({ length: 120 }, (_, i) => (i * 7) % 5);
    const docs = tensor(ids);
    const s = defineAttention({
      ...base,
      dtype: 'bf16',
      mask: maskMod(({ q, kv }) => docs.at(q).eq(docs.at(kv)).and(q.add(20).ge(kv)), {
        name: 'docs',
      }),
      scoreMod: scoreMod(({ score }) => score.div(20).tanh().mul(20), { name: 'softcap' }),
    });
    const text = specToJSON(s);
    const back = specFromJSON(text);
    expect(back.hash).toBe(s.hash);
    expect(Array.from(back.tensors[0]?.data ?? [])).toEqual(Array.from(ids));
    expect(
      layoutDifference(
        blockLayout(back, { blockQ: 16, blockKV: 16 }),
        blockLayout(s, { blockQ: 16, blockKV: 16 }),
      ),
    ).toBeNull();
  });
  it('keeps infinite literals and tensor values distinct in the hash and through JSON', () => {
    const capped = (x: number) =>
      defineAttention({ ...base, scoreMod: scoreMod(({ score }) => score.max(x)) });
    const plus = capped(Number.POSITIVE_INFINITY);
    const minus = capped(Number.NEGATIVE_INFINITY);
    expect(plus.hash).not.toBe(minus.hash);
    const back = specFromJSON(specToJSON(minus));
    expect(back.hash).toBe(minus.hash);
    expect(back.scoreMod?.expr).toEqual(minus.scoreMod?.expr);
    const t = tensor(
      Float32Array.from([1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN]),
    );
    const withT = defineAttention({
      ...base,
      scoreMod: scoreMod(({ score, h }) => score.add(t.at(h))),
    });
    expect(Array.from(specFromJSON(specToJSON(withT)).tensors[0]?.data ?? [])).toEqual([
      1,
      Infinity,
      -Infinity,
      Number.NaN,
    ]);
  });
  it('rejects tampered text', () => {
    const s = defineAttention(base);
    const raw = JSON.parse(specToJSON(s));
    expect(() => specFromJSON(JSON.stringify({ ...raw, batch: 3 }))).toThrow(
      /spec hash [0-9a-f]+ does not match its contents/,
    );
    expect(() => specFromJSON(JSON.stringify({ ...raw, version: 2 }))).toThrow(
      /spec version must be 1 \(got 2\)/,
    );
    const badNode = {
      ...raw,
      hash: undefined,
      mask: { name: 'x', expr: { op: 'bogus', type: 'bool' } },
    };
    expect(() => specFromJSON(JSON.stringify(badNode))).toThrow(/unknown expression node "bogus"/);
  });
});

describe('the cost model', () => {
  const denseConfig: AttentionConfig = {
    batch: 1,
    headsQ: 4,
    seqQ: 1000,
    seqKV: 1000,
    headDim: 64,
  };
  const dense = defineAttention(denseConfig);
  it('counts 4·N²·D FLOPs and an N×N f32 buffer for the naive strategy', () => {
    const c = estimateCost(dense, { strategy: 'naive' });
    expect(c.flops).toBe(4 * 4 * 1000 * 1000 * 64);
    expect(c.peakExtraBytes).toBe(4 * 4 * 1000 * 1000 + 4 * 4 * 1000);
  });
  it('gives tiled dense the same FLOPs with O(N) extra memory', () => {
    const t = estimateCost(dense, { strategy: 'tiled' });
    expect(t.flops).toBe(estimateCost(dense, { strategy: 'naive' }).flops);
    expect(t.peakExtraBytes).toBeLessThan(4 * 4 * 1000 * 8);
  });
  it('counts only visited pairs for a causal mask, checked against a direct count', () => {
    const s = defineAttention({ ...denseConfig, mask: maskMod(({ q, kv }) => q.ge(kv)) });
    const t = estimateCost(s, {
      strategy: 'tiled',
      layout: blockLayout(s, { blockQ: 64, blockKV: 64 }),
    });
    let pairs = 0;
    for (let qb = 0; qb < 1000; qb += 64) {
      const rows = Math.min(64, 1000 - qb);
      const lastKv = Math.min(999, qb + 63);
      pairs +=
        rows * (Math.floor(lastKv / 64) * 64 + Math.min(64, 1000 - Math.floor(lastKv / 64) * 64));
    }
    expect(t.computedPairs).toBe(4 * pairs);
    expect(t.flops).toBe(4 * pairs * 2 * 128);
    expect(t.density).toBeGreaterThan(0.5);
    expect(t.density).toBeLessThan(0.6);
  });
  it('prices linear attention without an N×N term', () => {
    const big = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 1 << 20,
      headDim: 64,
      kernel: { type: 'linear', featureMap: 'elu+1' },
    });
    const c = estimateCost(big, { strategy: 'tiled' });
    expect(c.peakExtraBytes).toBe(4 * 64 * 65);
    expect(c.flops).toBe(2 * (1 << 20) * 64 * 65 * 2);
  });
});

describe('specs that cannot lie, and no untyped errors', () => {
  const base = { batch: 1, headsQ: 2, seqQ: 8, headDim: 4 };
  it('brands specs: copies and edits are refused with a SpecError naming the caller', () => {
    const spec = defineAttention(base);
    expect(isAttentionSpec(spec)).toBe(true);
    expect(isAttentionSpec(specFromJSON(specToJSON(spec)))).toBe(true);
    const edited = { ...spec, seqQ: 9 };
    expect(isAttentionSpec(edited)).toBe(false);
    expect(() => assertSpec(edited, 'run()')).toThrow(SpecError);
    expect(() => assertSpec(edited, 'run()')).toThrow(
      'run() needs a spec from defineAttention() or specFromJSON() (got a copy or an edit of one',
    );
    expect(() => assertSpec(null, 'run()')).toThrow('(got null)');
    expect(() => assertSpec({}, 'run()')).toThrow('(got an object that is not a spec)');
    expect(() => blockLayout(edited as AttentionSpec)).toThrow(SpecError);
    expect(() => estimateCost({} as AttentionSpec)).toThrow('estimateCost() needs a spec');
    expect(() => validateInputs(null as unknown as AttentionSpec, {} as never)).toThrow(SpecError);
  });
  it('rejects unknown fields inside kernel, naming the field and the known ones', () => {
    expect(() =>
      defineAttention({
        ...base,
        kernel: { type: 'linear', featureMap: 'relu', featurs: 3 } as unknown as KernelConfig,
      }),
    ).toThrow(
      "unknown field 'kernel.featurs' for kernel 'linear' (known: type, featureMap, features, seed)",
    );
    expect(() =>
      defineAttention({
        ...base,
        kernel: { type: 'softmax', blockQ: 4 } as unknown as KernelConfig,
      }),
    ).toThrow(SpecError);
  });
  it('rejects a mask or score mod that is only a kind tag, as a SpecError', () => {
    expect(() => defineAttention({ ...base, mask: { kind: 'mask' } as unknown as Mask })).toThrow(
      SpecError,
    );
    expect(() =>
      defineAttention({ ...base, scoreMod: { kind: 'scoreMod' } as unknown as ScoreMod }),
    ).toThrow(SpecError);
  });
  it('specFromJSON rejects text that is not JSON, or not a string, as a SpecError', () => {
    expect(() => specFromJSON('not json')).toThrow(SpecError);
    expect(() => specFromJSON('not json')).toThrow('specFromJSON(): the text is not JSON');
    expect(() => specFromJSON(null as unknown as string)).toThrow(
      'specFromJSON() takes a JSON string (got null)',
    );
    expect(() => specFromJSON('{"version":1,"tensors":7}')).toThrow(
      'spec tensors must be an array (got 7)',
    );
  });
});
