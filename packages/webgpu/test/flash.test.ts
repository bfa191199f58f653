import { defineAttention, maskMod, scoreMod, tensor } from '@tessera/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createWebGpuBackend, type WebGpuBackend, type WebGpuRunOptions } from '../src/index.js';
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

const base = { batch: 1, headsQ: 2, seqQ: 37, headDim: 16 };
const causal = maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });
const window8 = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(8)), { name: 'window(8)' });
const slopes = tensor(new Float32Array([0.5, 0.25, 0.125, 0.0625]));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const none = maskMod(({ q }) => q.lt(-1), { name: 'nothing' });
const firstRowsEmpty = maskMod(({ q, kv }) => q.ge(5).and(kv.le(q)), { name: 'rows<5 empty' });

const cases = [
  ['dense', { ...base }],
  ['causal, seq not a multiple of the tile', { ...base, mask: causal }],
  ['sliding window', { ...base, seqQ: 70, mask: window8 }],
  [
    'GQA 4/2, bshd',
    { ...base, batch: 2, headsQ: 4, headsKV: 2, layout: 'bshd' as const, mask: causal },
  ],
  ['MQA, headDim 6, headDimV 5', { ...base, headsQ: 3, headsKV: 1, headDim: 6, headDimV: 5 }],
  ['cross attention seqKV > seqQ', { ...base, seqQ: 9, seqKV: 50 }],
  ['ALiBi score mod', { ...base, headsQ: 4, mask: causal, scoreMod: alibi }],
  ['fully masked rows', { ...base, mask: firstRowsEmpty }],
  ['everything masked', { ...base, mask: none }],
] as const;

describe('fused kernel against a dense f64 reference', () => {
  for (const [name, config] of cases) {
    it(name, async () => {
      const spec = defineAttention(config);
      const inputs = randomInputs(spec, 11);
      const want = denseReference(spec, inputs);
      const got = await backend.run(spec, inputs);
      expect(maxRelError(got.out, want.out)).toBeLessThan(1e-4);
      expect(maxRelError(got.lse, want.lse)).toBeLessThan(1e-4);
    });
  }
});

describe('fused kernel tile variants', () => {
  // Tiny tiles and head dims: software Vulkan compiles private arrays and unrolled loops slowly.
  const spec = defineAttention({
    ...base,
    headsQ: 4,
    headsKV: 2,
    seqQ: 27,
    seqKV: 23,
    headDim: 8,
    mask: window8,
    scoreMod: alibi,
  });
  const variants: [string, WebGpuRunOptions][] = [
    ['2 rows per thread', { blockQ: 8, blockKV: 4, rowsPerThread: 2 }],
    ['unrolled', { blockQ: 4, blockKV: 4, unroll: true }],
    ['unrolled, 2 rows per thread', { blockQ: 4, blockKV: 4, rowsPerThread: 2, unroll: true }],
    ['queries in registers', { qStage: 'private', blockQ: 8, blockKV: 4 }],
    ['blockKV not a power of two, 3 rows per thread', { blockQ: 6, blockKV: 3, rowsPerThread: 3 }],
  ];
  const inputs = randomInputs(spec, 5);
  const want = denseReference(spec, inputs);
  for (const [name, options] of variants) {
    it(name, async () => {
      const got = await backend.run(spec, inputs, options);
      expect(maxRelError(got.out, want.out)).toBeLessThan(1e-4);
      expect(maxRelError(got.lse, want.lse)).toBeLessThan(1e-4);
    });
  }

  it('splits grids larger than maxComputeWorkgroupsPerDimension into several dispatches', async () => {
    const small = await createWebGpuBackend({ limits: { maxComputeWorkgroupsPerDimension: 2 } });
    try {
      const big = defineAttention({ ...base, batch: 2, headsQ: 3, seqQ: 50, mask: causal });
      const x = randomInputs(big, 9);
      const resident = small.upload(big, x);
      const run = await small.prepare(big, resident, { blockQ: 8 });
      expect(run.passes).toBe(4 * 3); // 7 Q blocks in 4 chunks × 6 (batch, head) pairs in 3
      run.dispose();
      small.release(run.outputs);
      small.release(resident);
      const got = await small.run(big, x, { blockQ: 8 });
      const ref = denseReference(big, x);
      expect(maxRelError(got.out, ref.out)).toBeLessThan(1e-4);
      expect(maxRelError(got.lse, ref.lse)).toBeLessThan(1e-4);
    } finally {
      await small.dispose();
    }
  });
});

describe('half-precision specs', () => {
  const mk = (dtype: 'f16' | 'bf16') =>
    defineAttention({ ...base, seqQ: 45, dtype, mask: causal, scoreMod: alibi, headsQ: 4 });
  it('f16 with shader-f16: f16 storage, f32 arithmetic, within 2e-3', async () => {
    const spec = mk('f16');
    const inputs = randomInputs(spec, 21);
    const want = denseReference(spec, inputs); // inputs rounded to f16 there too
    const got = await backend.run(spec, inputs);
    expect(maxRelError(got.out, want.out)).toBeLessThan(2e-3);
    expect(maxRelError(got.lse, want.lse)).toBeLessThan(2e-3);
  });
  it('f16 without shader-f16: rounded inputs, f32 storage', async () => {
    const plain = await createWebGpuBackend({ disableFeatures: ['shader-f16'] });
    try {
      expect(plain.capabilities.f16).toBe(false);
      const spec = mk('f16');
      const inputs = randomInputs(spec, 22);
      const want = denseReference(spec, inputs);
      const got = await plain.run(spec, inputs);
      expect(maxRelError(got.out, want.out)).toBeLessThan(1e-4);
    } finally {
      await plain.dispose();
    }
  });
  it('bf16: rounded inputs, f32 storage', async () => {
    const spec = mk('bf16');
    const inputs = randomInputs(spec, 23);
    const want = denseReference(spec, inputs);
    const got = await backend.run(spec, inputs);
    expect(maxRelError(got.out, want.out)).toBeLessThan(1e-4);
  });
});

describe('device-resident tensors', () => {
  it('uploads once, runs many times, reads back on request', async () => {
    const spec = defineAttention({ ...base, mask: causal });
    const inputs = randomInputs(spec, 31);
    const want = denseReference(spec, inputs);
    const resident = backend.upload(spec, inputs);
    const a = await backend.runResident(spec, resident);
    const b = await backend.runResident(spec, resident, { blockQ: 8, blockKV: 8 });
    const [ra, rb] = [await backend.readback(a), await backend.readback(b)];
    expect(maxRelError(ra.out, want.out)).toBeLessThan(1e-4);
    expect(maxRelError(rb.out, want.out)).toBeLessThan(1e-4);
    for (const x of [a, b, resident]) backend.release(x);
  });
});
