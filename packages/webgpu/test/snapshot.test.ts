// The generated WGSL of a few specs, pinned: a change to the emitters shows up as a diff here.
// emitWgsl needs no device; tiles are chosen for WebGPU's default limits.
import { defineAttention, hash, maskMod, scoreMod, tensor } from '@tessera/core';
import { causal, slidingWindow } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { emitWgsl } from '../src/index.js';

const slopes = tensor(new Float32Array([0.5, 0.25, 0.125, 0.0625]));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const randomBlocks = maskMod(
  ({ q, kv }) => q.ge(kv).and(hash(3, q.div(16), kv.div(16)).lt(0.25).or(q.sub(kv).lt(16))),
  { name: 'random-blocks(0.25)' },
);

const specs = {
  'dense-f32-d64': defineAttention({ batch: 1, headsQ: 16, seqQ: 4096, headDim: 64 }),
  'causal-gqa-bshd-alibi': defineAttention({
    batch: 2,
    headsQ: 4,
    headsKV: 2,
    seqQ: 1000,
    headDim: 32,
    layout: 'bshd',
    mask: causal(),
    scoreMod: alibi,
  }),
  'window-d6-unrolled': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 300,
    headDim: 6,
    headDimV: 5,
    mask: slidingWindow(64, { causal: true }),
  }),
  'random-blocks-f16': defineAttention({
    batch: 1,
    headsQ: 2,
    seqQ: 512,
    headDim: 16,
    dtype: 'f16',
    mask: randomBlocks,
  }),
};

describe('generated WGSL snapshots', () => {
  it('fused kernel, dense', async () => {
    await expect(emitWgsl(specs['dense-f32-d64'])).toMatchFileSnapshot(
      '__snapshots__/flash-dense-f32-d64.wgsl',
    );
  });
  it('fused kernel, causal GQA bshd with ALiBi', async () => {
    await expect(
      emitWgsl(specs['causal-gqa-bshd-alibi'], { rowsPerThread: 2 }),
    ).toMatchFileSnapshot('__snapshots__/flash-causal-gqa-bshd-alibi.wgsl');
  });
  it('fused kernel, sliding window, odd head dims, unrolled', async () => {
    await expect(
      emitWgsl(specs['window-d6-unrolled'], { blockQ: 8, blockKV: 8, unroll: true }),
    ).toMatchFileSnapshot('__snapshots__/flash-window-d6-unrolled.wgsl');
  });
  it('fused kernel, hashed random blocks, f16 storage', async () => {
    await expect(emitWgsl(specs['random-blocks-f16'], { storage: 'f16' })).toMatchFileSnapshot(
      '__snapshots__/flash-random-blocks-f16.wgsl',
    );
  });
  it('naive three-pass baseline, causal', async () => {
    await expect(
      emitWgsl(specs['causal-gqa-bshd-alibi'], { strategy: 'naive', subgroups: true }),
    ).toMatchFileSnapshot('__snapshots__/naive-causal-gqa-bshd-alibi.wgsl');
  });
  it('linear attention, favor+ causal', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 100,
      headDim: 16,
      mask: causal(),
      kernel: { type: 'linear', featureMap: 'favor+', features: 32, seed: 5 },
    });
    await expect(emitWgsl(spec)).toMatchFileSnapshot('__snapshots__/linear-favor-causal.wgsl');
  });
  it('is deterministic', () => {
    const spec = specs['causal-gqa-bshd-alibi'];
    expect(emitWgsl(spec)).toBe(emitWgsl(spec));
  });
});
