import { type AttentionConfig, defineAttention, type FeatureMap, maskMod } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { denseAttention } from './dense.js';
import { expectClose, inputsFor, relErr } from './util.js';

const backend = await createCpuBackend();
const causal = maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });
const maps: FeatureMap[] = ['elu+1', 'relu', 'favor+', 'trig-rf'];
const random = (m: FeatureMap) => m === 'favor+' || m === 'trig-rf';

const shapes: [string, Partial<AttentionConfig>][] = [
  ['MHA', { batch: 2, headsQ: 2, seqQ: 9, headDim: 4 }],
  [
    'GQA, seqQ > seqKV, bshd',
    {
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 13,
      seqKV: 7,
      headDim: 5,
      headDimV: 3,
      layout: 'bshd',
    },
  ],
  ['MQA, seqQ < seqKV', { batch: 1, headsQ: 3, headsKV: 1, seqQ: 6, seqKV: 11, headDim: 3 }],
];

describe('linear attention against the dense reference', () => {
  for (const featureMap of maps) {
    for (const [name, shape] of shapes) {
      for (const mask of [undefined, causal]) {
        it(`${featureMap}, ${name}, ${mask ? 'causal' : 'non-causal'}`, async () => {
          const spec = defineAttention({
            ...(shape as AttentionConfig),
            mask,
            kernel: random(featureMap)
              ? { type: 'linear', featureMap, features: 24, seed: 3 }
              : { type: 'linear', featureMap },
          } as AttentionConfig);
          // Small inputs keep trig-rf's normaliser positive.
          const inputs = inputsFor(spec, featureMap.length + name.length, 0.5);
          const want = denseAttention(spec, inputs);
          expectClose(await backend.run(spec, inputs), want, 1e-6);
          expectClose(await backend.run(spec, inputs, { strategy: 'naive' }), want, 1e-6);
        });
      }
    }
  }

  it('favor+ with many features approximates softmax attention', async () => {
    const base = { batch: 1, headsQ: 2, seqQ: 24, headDim: 8, mask: causal } as const;
    const soft = defineAttention(base);
    const inputs = inputsFor(soft, 12, 0.6);
    const exact = await backend.run(soft, inputs);
    for (const featureMap of ['favor+', 'trig-rf'] as const) {
      const lin = defineAttention({
        ...base,
        kernel: { type: 'linear', featureMap, features: 4096, seed: 1 },
      });
      const approx = await backend.run(lin, inputs);
      expect(relErr(approx.out, exact.out)).toBeLessThan(0.05);
      for (let i = 0; i < exact.lse.length; i++) {
        expect(Math.abs(approx.lse[i] - exact.lse[i])).toBeLessThan(0.05);
      }
    }
  });

  it('relu features that never overlap give out = 0 and lse = -Infinity', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 3,
      headDim: 2,
      kernel: { type: 'linear', featureMap: 'relu' },
    });
    // Row 1 has only negative entries: φ(q_1) = 0.
    const q = Float32Array.of(1, 0.5, -1, -2, 0.25, 1);
    const k = Float32Array.of(0.5, 1, 1, 0, 2, 0.5);
    const v = Float32Array.of(1, 2, 3, 4, 5, 6);
    for (const strategy of ['tiled', 'naive'] as const) {
      const { out, lse } = await backend.run(spec, { q, k, v }, { strategy });
      expect(lse[1]).toBe(Number.NEGATIVE_INFINITY);
      expect(Array.from(out.subarray(2, 4))).toEqual([0, 0]);
      expect(Number.isFinite(lse[0]) && Number.isFinite(lse[2])).toBe(true);
      // Hand-computed row 0 with scale 1/√2: x = q/2^¼, y = k/2^¼, K_0j = φ(x)·φ(y) ∝ q_0·k_j.
      const w = [0.5 * 1 + 0.5 * 1, 1 * 1, 2 * 1 + 0.5 * 0.5];
      const den = w[0] + w[1] + w[2];
      expect(out[0]).toBeCloseTo((w[0] * 1 + w[1] * 3 + w[2] * 5) / den, 5);
      expect(lse[0]).toBeCloseTo(Math.log(den / Math.SQRT2), 5);
    }
  });

  it('stabilisers keep large inputs finite, and prefix sums agree with the naive matrix', async () => {
    for (const featureMap of ['favor+', 'trig-rf', 'elu+1'] as const) {
      for (const mask of [undefined, causal]) {
        const spec = defineAttention({
          batch: 1,
          headsQ: 2,
          seqQ: 40,
          headDim: 16,
          mask,
          kernel: random(featureMap)
            ? { type: 'linear', featureMap, features: 32, seed: 9 }
            : { type: 'linear', featureMap },
        });
        // |x|²/2 reaches ~100 here: exp(|x|²/2) alone would overflow f32.
        const inputs = inputsFor(spec, 4, 6);
        const tiled = await backend.run(spec, inputs);
        const naive = await backend.run(spec, inputs, { strategy: 'naive' });
        expect(tiled.out.some(Number.isNaN) || tiled.lse.some(Number.isNaN)).toBe(false);
        expect(tiled.lse.some((x) => x === Number.POSITIVE_INFINITY)).toBe(false);
        expectClose(tiled, naive, featureMap === 'trig-rf' ? 1e-3 : 1e-5);
      }
    }
  });
});
