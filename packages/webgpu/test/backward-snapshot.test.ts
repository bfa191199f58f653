// The backward's generated WGSL for two specs, pinned (device-free; WebGPU's default limits).
import { defineAttention, scoreMod, tensor } from '@tessera/core';
import { causal, slidingWindow } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { type BackwardModules, emitBackwardWgsl } from '../src/index.js';

const modules = (m: BackwardModules): string =>
  Object.entries(m)
    .filter(([, code]) => code !== null)
    .map(([name, code]) => `// ======== module: ${name}\n${code}`)
    .join('\n');

const slopes = tensor(new Float32Array([0.5, 0.25, 0.125, 0.0625]));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});

describe('backward WGSL snapshots', () => {
  it('plain causal', async () => {
    const spec = defineAttention({ batch: 1, headsQ: 8, seqQ: 1024, headDim: 64, mask: causal() });
    await expect(modules(emitBackwardWgsl(spec))).toMatchFileSnapshot(
      '__snapshots__/backward-causal.wgsl',
    );
  });
  it('ALiBi (learnable slopes) + sliding window, GQA, bshd', async () => {
    const spec = defineAttention({
      batch: 2,
      headsQ: 4,
      headsKV: 2,
      seqQ: 300,
      headDim: 32,
      layout: 'bshd',
      mask: slidingWindow(64, { causal: true }),
      scoreMod: alibi,
    });
    await expect(modules(emitBackwardWgsl(spec))).toMatchFileSnapshot(
      '__snapshots__/backward-alibi-window.wgsl',
    );
  });
  it('is deterministic', () => {
    const spec = defineAttention({ batch: 1, headsQ: 4, seqQ: 100, headDim: 16, scoreMod: alibi });
    expect(modules(emitBackwardWgsl(spec))).toBe(modules(emitBackwardWgsl(spec)));
  });
});
