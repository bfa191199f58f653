import { type AttentionConfig, defineAttention, type FeatureMap } from '@tessera/core';
import { causal } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import {
  dOutFor,
  exactBackward,
  expectGrad,
  expectGradients,
  FD_STEP,
  FD_TOL,
  fdGradients,
  pointOf,
} from './gradcheck.js';
import { inputsFor } from './util.js';

const backend = await createCpuBackend();
const maps: FeatureMap[] = ['elu+1', 'relu', 'favor+', 'trig-rf'];
const random = (m: FeatureMap) => m === 'favor+' || m === 'trig-rf';

const shapes: [string, AttentionConfig][] = [
  ['MHA, batch 2', { batch: 2, headsQ: 2, seqQ: 5, headDim: 3 }],
  [
    'GQA 4/2, seqQ > seqKV, headDimV != headDim, bshd',
    { batch: 1, headsQ: 4, headsKV: 2, seqQ: 6, seqKV: 4, headDim: 3, headDimV: 2, layout: 'bshd' },
  ],
  ['MQA, seqQ < seqKV', { batch: 1, headsQ: 2, headsKV: 1, seqQ: 4, seqKV: 6, headDim: 4 }],
];

const specFor = (featureMap: FeatureMap, shape: AttentionConfig, isCausal: boolean) =>
  defineAttention({
    ...shape,
    mask: isCausal ? causal() : undefined,
    kernel: random(featureMap)
      ? { type: 'linear', featureMap, features: 6, seed: 3 }
      : { type: 'linear', featureMap },
  });

describe('cpu backward (linear kernels) vs central finite differences of an exact f64 forward', () => {
  for (const featureMap of maps) {
    for (const [name, shape] of shapes) {
      for (const isCausal of [false, true]) {
        it(`${featureMap}, ${name}, ${isCausal ? 'causal' : 'non-causal'}`, () => {
          const spec = specFor(featureMap, shape, isCausal);
          // Small inputs keep trig-rf's normaliser positive.
          const inputs = inputsFor(spec, 17 + name.length, 0.5);
          const dOut = dOutFor(spec, 5);
          const fd = fdGradients(spec, pointOf(spec, inputs), dOut, FD_STEP);
          const tiled = exactBackward(spec, inputs, dOut);
          const naive = exactBackward(spec, inputs, dOut, { strategy: 'naive' });
          expectGradients(tiled, fd, FD_TOL, []);
          expectGradients(naive, fd, FD_TOL, []);
          expectGrad('dq (prefix vs naive)', tiled.dq, naive.dq, 1e-10);
          expectGrad('dk (prefix vs naive)', tiled.dk, naive.dk, 1e-10);
          expectGrad('dv (prefix vs naive)', tiled.dv, naive.dv, 1e-10);
        });
      }
    }
  }
});

describe('linear backward through the façade', () => {
  it('favor+ causal in f16 with the forward’s f32 out / lse, larger inputs (stabilisers matter)', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 7,
      headDim: 4,
      dtype: 'f16',
      mask: causal(),
      kernel: { type: 'linear', featureMap: 'favor+', features: 8, seed: 9 },
    });
    const inputs = inputsFor(spec, 2, 3);
    const { out, lse } = await backend.run(spec, inputs);
    const dOut64 = dOutFor(spec, 4);
    const got = await backend.backward?.(spec, {
      ...inputs,
      out,
      lse,
      dOut: Float32Array.from(dOut64),
    });
    if (!got) throw new Error('no backward');
    expect(got.grads).toEqual([]);
    const fd = fdGradients(spec, pointOf(spec, inputs), dOut64, FD_STEP);
    // f32 outputs of the façade: ~1e-7 relative rounding on top of the f64 reference.
    expectGrad('dq', got.dq, fd.dq, 1e-5);
    expectGrad('dk', got.dk, fd.dk, 1e-5);
    expectGrad('dv', got.dv, fd.dv, 1e-5);
  });

  it('a relu row with no attention mass (den = 0) gets zero gradients, no NaN', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 3,
      headDim: 2,
      kernel: { type: 'linear', featureMap: 'relu' },
    });
    // Row 1's query is ≤ 0 everywhere: φ(x_1) = 0, den = 0, out = 0 and lse = -Infinity.
    const q = Float32Array.from([0.5, 0.2, -0.4, -0.1, 0.3, 0.9]);
    const k = Float32Array.from([0.6, 0.1, 0.2, 0.7, 0.4, 0.3]);
    const v = Float32Array.from([0.1, -0.5, 0.8, 0.3, -0.2, 0.6]);
    const { out, lse } = await backend.run(spec, { q, k, v });
    expect(lse[1]).toBe(Number.NEGATIVE_INFINITY);
    const dOut = Float32Array.from([0.3, -0.7, 0.9, 0.4, -0.2, 0.5]);
    for (const strategy of ['tiled', 'naive'] as const) {
      const g = await backend.backward?.(spec, { q, k, v, out, lse, dOut }, { strategy });
      if (!g) throw new Error('no backward');
      for (const t of [g.dq, g.dk, g.dv]) expect(t.some(Number.isNaN)).toBe(false);
      expect(Array.from(g.dq.subarray(2, 4))).toEqual([0, 0]);
      const fd = fdGradients(spec, pointOf(spec, { q, k, v }), Float64Array.from(dOut), FD_STEP);
      expectGrad('dq', g.dq, fd.dq, 1e-5);
      expectGrad('dk', g.dk, fd.dk, 1e-5);
      expectGrad('dv', g.dv, fd.dv, 1e-5);
    }
  });
});
