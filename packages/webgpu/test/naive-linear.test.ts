// The naive 3-pass baseline and the linear kernels against independent dense computations.
import { defineAttention, elementIndex, kvHeadOf, maskMod, scoreMod } from '@tessera/core';
import { featureDim, linearInputScales, randomFeatureMatrix } from '@tessera/core/backend';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createWebGpuBackend, type WebGpuBackend } from '../src/index.js';
import { denseReference, maxRelError, randomInputs } from './reference.js';

// Software Vulkan compiles each new pipeline on first use; under a loaded 2-core CI that can take long.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

let backend: WebGpuBackend;
beforeAll(async () => {
  backend = await createWebGpuBackend();
});
afterAll(async () => {
  await backend?.dispose();
});

const causal = maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });
const softcap = scoreMod(({ score }) => score.div(5).tanh().mul(5), { name: 'softcap(5)' });

describe('naive 3-pass baseline', () => {
  const cases = [
    ['dense', defineAttention({ batch: 2, headsQ: 2, seqQ: 33, seqKV: 40, headDim: 8 })],
    [
      'causal GQA bshd softcap',
      defineAttention({
        batch: 1,
        headsQ: 4,
        headsKV: 2,
        seqQ: 50,
        headDim: 12,
        layout: 'bshd',
        mask: causal,
        scoreMod: softcap,
      }),
    ],
    [
      'rows fully masked',
      defineAttention({
        batch: 1,
        headsQ: 1,
        seqQ: 20,
        headDim: 4,
        mask: maskMod(({ q, kv }) => q.ge(3).and(kv.lt(q)), { name: 'strict' }),
      }),
    ],
  ] as const;
  for (const [name, spec] of cases) {
    it(name, async () => {
      const inputs = randomInputs(spec, 3);
      const want = denseReference(spec, inputs);
      const got = await backend.run(spec, inputs, { strategy: 'naive' });
      expect(maxRelError(got.out, want.out)).toBeLessThan(1e-4);
      expect(maxRelError(got.lse, want.lse)).toBeLessThan(1e-4);
    });
  }
});

/** Dense linear attention in f64 from core's documented feature maps (no stabilisers needed here). */
function denseLinear(
  spec: ReturnType<typeof defineAttention>,
  x: { q: Float32Array; k: Float32Array; v: Float32Array },
) {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('linear spec expected');
  const {
    batch: B,
    headsQ: H,
    headsKV: HK,
    seqQ: SQ,
    seqKV: SK,
    headDim: D,
    headDimV: DV,
    layout,
  } = spec;
  const F = featureDim(spec);
  const s = linearInputScales(spec.scale);
  const W =
    k.featureMap === 'favor+' || k.featureMap === 'trig-rf' ? randomFeatureMatrix(k, D) : null;
  const phi = (
    src: Float32Array,
    heads: number,
    seq: number,
    b: number,
    h: number,
    i: number,
    mul: number,
  ) => {
    const v = Array.from(
      { length: D },
      (_, d) => mul * (src[elementIndex(layout, heads, seq, D, b, h, i, d)] as number),
    );
    const sq = v.reduce((a, y) => a + y * y, 0);
    const m = k.features;
    const proj = (r: number) => v.reduce((a, y, d) => a + y * (W as Float32Array)[r * D + d], 0);
    switch (k.featureMap) {
      case 'elu+1':
        return v.map((y) => (y > 0 ? y + 1 : Math.exp(y)));
      case 'relu':
        return v.map((y) => Math.max(y, 0));
      case 'favor+':
        return Array.from({ length: m }, (_, r) => Math.exp(proj(r) - sq / 2) / Math.sqrt(m));
      case 'trig-rf': {
        const out = new Array(2 * m);
        for (let r = 0; r < m; r++) {
          out[r] = (Math.exp(sq / 2) * Math.sin(proj(r))) / Math.sqrt(m);
          out[m + r] = (Math.exp(sq / 2) * Math.cos(proj(r))) / Math.sqrt(m);
        }
        return out;
      }
    }
  };
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = kvHeadOf(spec, h);
      for (let i = 0; i < SQ; i++) {
        const fq = phi(x.q, H, SQ, b, h, i, s.query);
        let den = 0;
        const num = new Float64Array(DV);
        const last = spec.mask ? Math.min(i, SK - 1) : SK - 1;
        for (let j = 0; j <= last; j++) {
          const fk = phi(x.k, HK, SK, b, hk, j, s.key);
          let kij = 0;
          for (let f = 0; f < F; f++) kij += fq[f] * fk[f];
          den += kij;
          for (let c = 0; c < DV; c++)
            num[c] += kij * (x.v[elementIndex(layout, HK, SK, DV, b, hk, j, c)] as number);
        }
        lse[(b * H + h) * SQ + i] = den > 0 ? Math.log(den) : -Infinity;
        for (let c = 0; c < DV; c++)
          out[elementIndex(layout, H, SQ, DV, b, h, i, c)] = den > 0 ? num[c] / den : 0;
      }
    }
  return { out, lse };
}

describe('linear kernels', () => {
  const shapes = { batch: 1, headsQ: 4, headsKV: 2, seqQ: 70, seqKV: 70, headDim: 8 };
  const cases = [
    ['elu+1', { type: 'linear', featureMap: 'elu+1' }, false],
    ['elu+1 causal', { type: 'linear', featureMap: 'elu+1' }, true],
    ['relu causal', { type: 'linear', featureMap: 'relu' }, true],
    ['favor+', { type: 'linear', featureMap: 'favor+', features: 16, seed: 7 }, false],
    ['favor+ causal', { type: 'linear', featureMap: 'favor+', features: 16, seed: 7 }, true],
    ['trig-rf causal', { type: 'linear', featureMap: 'trig-rf', features: 8, seed: 3 }, true],
  ] as const;
  for (const [name, kernel, isCausal] of cases) {
    it(name, async () => {
      const spec = defineAttention({ ...shapes, kernel, ...(isCausal ? { mask: causal } : {}) });
      const inputs = randomInputs(spec, 13);
      const want = denseLinear(spec, inputs);
      const got = await backend.run(spec, inputs);
      const tol = kernel.featureMap === 'trig-rf' ? 1e-3 : 1e-4;
      expect(maxRelError(got.out, want.out)).toBeLessThan(tol);
      expect(maxRelError(got.lse, want.lse)).toBeLessThan(tol);
    });
  }
});
