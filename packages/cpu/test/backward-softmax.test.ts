import {
  type AttentionConfig,
  defineAttention,
  maskMod,
  scoreMod,
  tensor,
  tensorSlot,
  where,
} from '@tessera/core';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
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
import { inputsFor, seeded } from './util.js';

// Captured f32 tensors the score modifications read (each case gets fresh data: a spec owns it).
const slopes = (heads: number) =>
  tensor(Float32Array.from({ length: heads }, (_, h) => 0.5 / (h + 1)));
const alibi = (t: ReturnType<typeof slopes>) =>
  scoreMod(({ score, h, q, kv }) => score.sub(t.at(h).mul(q.sub(kv).abs().toFloat())), {
    name: 'alibi (learnable slopes)',
  });
const relBias = (n: number, offset: number) => {
  const table = tensor(seeded(n, 4, 0, 0.7));
  return {
    table,
    mod: scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(offset))), {
      name: 'relative bias',
    }),
  };
};
const softcap = scoreMod(({ score }) => score.div(0.6).tanh().mul(0.6), { name: 'softcap 0.6' });
const temperature = (t: ReturnType<typeof slopes>) =>
  scoreMod(({ score, h }) => score.mul(t.at(h)), { name: 'temperature' });
const branchy = (t: ReturnType<typeof slopes>) =>
  scoreMod(
    ({ score, h, q, kv }) =>
      where(q.gt(kv), score.min(t.at(h).mul(2)), score.abs().mul(t.at(h)).max(score.mul(0.3))).sub(
        q.sub(kv).toFloat().abs().mul(0.1),
      ),
    { name: 'where / min / max / abs' },
  );

interface Case {
  name: string;
  config: AttentionConfig;
  /** Tensors whose gradient must come back (others must be null). */
  learn?: Float32Array[];
  amp?: number;
}

const t4 = () => slopes(4);
const cases: Case[] = (() => {
  const list: Case[] = [];
  list.push({
    name: 'no mask, batch 2, seqQ != seqKV, headDimV != headDim',
    config: { batch: 2, headsQ: 2, seqQ: 5, seqKV: 7, headDim: 3, headDimV: 4 },
  });
  list.push({
    name: 'causal (patterns), 2x3 blocks',
    config: {
      batch: 1,
      headsQ: 2,
      seqQ: 8,
      headDim: 3,
      mask: causal(),
      tiling: { blockQ: 2, blockKV: 3 },
    },
  });
  list.push({
    name: 'sliding window 3, GQA 4/2',
    config: {
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 9,
      headDim: 3,
      mask: slidingWindow(3),
      tiling: { blockQ: 3, blockKV: 2 },
    },
  });
  list.push({
    name: 'BigBird (window 3, 1 global, 1 random block), MQA',
    config: {
      batch: 1,
      headsQ: 3,
      headsKV: 1,
      seqQ: 12,
      headDim: 2,
      mask: bigBird({ window: 3, globalBlocks: 1, randomBlocks: 1, block: 2, seed: 5, seqKV: 12 }),
      tiling: { blockQ: 4, blockKV: 2 },
    },
  });
  {
    const s = t4();
    list.push({
      name: 'ALiBi with learnable per-head slopes, causal',
      config: { batch: 1, headsQ: 4, seqQ: 6, headDim: 3, mask: causal(), scoreMod: alibi(s) },
      learn: [s.data as Float32Array],
    });
  }
  {
    const { table, mod } = relBias(11, 5);
    list.push({
      name: 'relative position bias table (q − kv + 5), bshd, GQA',
      config: {
        batch: 2,
        headsQ: 4,
        headsKV: 2,
        seqQ: 6,
        headDim: 3,
        layout: 'bshd',
        scoreMod: mod,
      },
      learn: [table.data as Float32Array],
    });
  }
  list.push({
    name: 'softcap (tanh), inputs scaled up',
    config: { batch: 1, headsQ: 2, seqQ: 6, headDim: 4, scoreMod: softcap },
    amp: 2,
  });
  {
    const s = t4();
    list.push({
      name: 'per-head temperature score · T[h], MQA, bshd',
      config: {
        batch: 1,
        headsQ: 4,
        headsKV: 1,
        seqQ: 5,
        seqKV: 7,
        headDim: 3,
        layout: 'bshd',
        scoreMod: temperature(s),
      },
      learn: [s.data as Float32Array],
    });
  }
  {
    const s = t4();
    list.push({
      name: 'where / min / max / abs score mod',
      config: { batch: 1, headsQ: 4, headsKV: 2, seqQ: 6, headDim: 3, scoreMod: branchy(s) },
      learn: [s.data as Float32Array],
    });
  }
  {
    // The mask reads an i32 tensor (no gradient); the score mod reads an f32 one.
    const doc = tensor(Int32Array.from([0, 0, 0, 1, 1, 1, 1]));
    const s = slopes(2);
    list.push({
      name: 'i32 document mask and f32 slopes: grads for the f32 slot only',
      config: {
        batch: 1,
        headsQ: 2,
        seqQ: 7,
        headDim: 3,
        mask: maskMod(({ q, kv }) => doc.at(q).eq(doc.at(kv))),
        scoreMod: alibi(s),
      },
      learn: [s.data as Float32Array],
    });
  }
  list.push({
    name: 'f16 inputs (rounded like the forward), causal',
    config: { batch: 1, headsQ: 2, seqQ: 6, headDim: 4, dtype: 'f16', mask: causal() },
  });
  list.push({
    name: 'bf16 inputs, GQA, bshd',
    config: { batch: 1, headsQ: 4, headsKV: 2, seqQ: 5, headDim: 4, dtype: 'bf16', layout: 'bshd' },
  });
  return list;
})();

describe('cpu backward (softmax) vs central finite differences of an exact f64 forward', () => {
  for (const c of cases) {
    it(c.name, () => {
      const spec = defineAttention(c.config);
      const inputs = inputsFor(spec, 11, c.amp ?? 1);
      const dOut = dOutFor(spec, 3);
      const slots = (c.learn ?? []).map((d) => tensorSlot(spec, d));
      expect(slots.every((s) => s >= 0)).toBe(true);
      const fd = fdGradients(spec, pointOf(spec, inputs), dOut, FD_STEP);
      for (const strategy of ['tiled', 'naive'] as const) {
        expectGradients(exactBackward(spec, inputs, dOut, { strategy }), fd, FD_TOL, slots);
      }
    });
  }
});

describe('cpu backward: tiled and naive strategies agree', () => {
  for (const c of cases) {
    it(c.name, () => {
      const spec = defineAttention(c.config);
      const inputs = inputsFor(spec, 21, c.amp ?? 1);
      const dOut = dOutFor(spec, 8);
      const tiled = exactBackward(spec, inputs, dOut, { strategy: 'tiled' });
      const naive = exactBackward(spec, inputs, dOut, { strategy: 'naive' });
      // Also with other block sizes than the spec's: the walk changes, the sums must not.
      const odd = exactBackward(spec, inputs, dOut, { blockQ: 3, blockKV: 5 });
      for (const other of [naive, odd]) {
        expectGrad('dq', tiled.dq, other.dq, 1e-10);
        expectGrad('dk', tiled.dk, other.dk, 1e-10);
        expectGrad('dv', tiled.dv, other.dv, 1e-10);
        tiled.grads.forEach((g, slot) => {
          if (g === null) expect(other.grads[slot]).toBeNull();
          else expectGrad(`grads[${slot}]`, g, other.grads[slot] as Float64Array, 1e-10);
        });
      }
    });
  }
});
