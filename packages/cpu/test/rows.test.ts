import {
  type AttentionConfig,
  defineAttention,
  elementIndex,
  InputError,
  maskMod,
  scoreMod,
  tensorSizes,
} from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { createCpuBackend, referenceRows } from '../src/index.js';

function inputs(config: AttentionConfig, seed: number) {
  const spec = defineAttention(config);
  const n = tensorSizes(spec);
  let x = seed;
  const fill = (len: number) =>
    Float32Array.from({ length: len }, () => {
      x = (x * 1103515245 + 12345) >>> 0;
      return (x / 2 ** 32) * 4 - 2;
    });
  return { spec, data: { q: fill(n.q), k: fill(n.k), v: fill(n.v) } };
}

describe('referenceRows', () => {
  const configs: [string, AttentionConfig][] = [
    [
      'GQA, bshd, window + alibi-like mod',
      {
        batch: 2,
        headsQ: 4,
        headsKV: 2,
        seqQ: 37,
        seqKV: 53,
        headDim: 12,
        headDimV: 7,
        layout: 'bshd',
        mask: maskMod(({ q, kv }) => kv.le(q.add(10)).and(kv.gt(q.sub(9)))),
        scoreMod: scoreMod(({ score, h, q, kv }) =>
          score.sub(q.sub(kv).abs().toFloat().mul(h.add(1).toFloat().mul(0.1))),
        ),
      },
    ],
    ['bf16 dense', { batch: 1, headsQ: 2, seqQ: 20, headDim: 16, dtype: 'bf16' }],
    [
      'linear favor+ causal',
      {
        batch: 1,
        headsQ: 2,
        seqQ: 40,
        headDim: 8,
        kernel: { type: 'linear', featureMap: 'favor+', features: 16, seed: 3 },
        mask: maskMod(({ q, kv }) => q.ge(kv)),
      },
    ],
  ];
  for (const [name, config] of configs) {
    it(`equals the matching rows of run(): ${name}`, async () => {
      const { spec, data } = inputs(config, 11);
      const full = await (await createCpuBackend()).run(spec, data);
      const rows = [
        { b: 0, h: 0, q: 0 },
        { b: spec.batch - 1, h: spec.headsQ - 1, q: spec.seqQ - 1 },
        { b: 0, h: 1, q: 5 },
      ];
      const got = await referenceRows(spec, data, rows);
      rows.forEach(({ b, h, q }, r) => {
        for (let d = 0; d < spec.headDimV; d++) {
          const want = full.out[
            elementIndex(spec.layout, spec.headsQ, spec.seqQ, spec.headDimV, b, h, q, d)
          ] as number;
          expect(Math.abs((got.out[r * spec.headDimV + d] as number) - want)).toBeLessThan(1e-6);
        }
        expect(got.lse[r]).toBeCloseTo(
          full.lse[(b * spec.headsQ + h) * spec.seqQ + q] as number,
          6,
        );
      });
    });
  }
  it('gives zeros and -Infinity for a fully masked row', async () => {
    const { spec, data } = inputs(
      {
        batch: 1,
        headsQ: 1,
        seqQ: 8,
        headDim: 4,
        mask: maskMod(({ q, kv }) => q.ge(3).and(kv.le(q))),
      },
      5,
    );
    const got = await referenceRows(spec, data, [{ b: 0, h: 0, q: 1 }]);
    expect(Array.from(got.out)).toEqual([0, 0, 0, 0]);
    expect(got.lse[0]).toBe(Number.NEGATIVE_INFINITY);
  });
  it('rejects rows outside the spec', async () => {
    const { spec, data } = inputs({ batch: 1, headsQ: 2, seqQ: 8, headDim: 4 }, 5);
    await expect(referenceRows(spec, data, [{ b: 0, h: 2, q: 0 }])).rejects.toThrow(InputError);
    await expect(referenceRows(spec, data, [{ b: 0, h: 0, q: 8 }])).rejects.toThrow(
      'rows[0] = (b 0, h 0, q 8) is outside',
    );
  });
});
