import {
  blockLayout,
  defineAttention,
  exactBlockLayout,
  layoutDifference,
  type Mask,
  SpecError,
} from '@tessera/core';
import { describe, expect, it } from 'vitest';
import {
  bigBird,
  causal,
  document,
  globalTokens,
  longformer,
  random,
  slidingWindow,
  union,
} from '../src/index.js';

const specOf = (mask: Mask, headsQ = 4, seq = 96) =>
  defineAttention({ batch: 2, headsQ, headsKV: 2, seqQ: seq, seqKV: seq, headDim: 8, mask });

describe('patterns inside an attention spec', () => {
  const ids = Int32Array.from({ length: 96 }, (_, t) => Math.floor(t / 20));
  const masks: [string, Mask][] = [
    [
      'longformer, dilation per head',
      longformer({ window: 10, dilation: [1, 2, 3, 4], global: [5] }),
    ],
    ['random per head', random({ density: 0.2, seed: 3, perHead: true })],
    [
      'document with tensors in two operands',
      union(document(ids), globalTokens(Array.from({ length: 20 }, (_, i) => 4 * i + 1))),
    ],
    [
      'bigbird',
      bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block: 16, seed: 5, seqKV: 96 }),
    ],
  ];

  it.each(masks)(
    '%s: blockLayout(spec) is the analytic layout and equals the per-element one',
    (_label, mask) => {
      const spec = specOf(mask);
      const tensors = spec.tensors.map((t) => t.data);
      for (const [bq, bk] of [
        [16, 16],
        [7, 13],
      ] as const) {
        const analytic = blockLayout(spec, { blockQ: bq, blockKV: bk });
        const ctx = { seqQ: 96, seqKV: 96, blockQ: bq, blockKV: bk, batch: 2, headsQ: 4 };
        expect(
          layoutDifference(analytic, exactBlockLayout(spec.mask?.expr ?? null, tensors, ctx)),
        ).toBeNull();
        expect(layoutDifference(analytic, mask.layout?.(ctx) as never)).toBeNull();
      }
    },
  );

  it('keeps causal() recognisable by linear kernels', () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 8,
      seqKV: 8,
      headDim: 4,
      mask: causal(),
      kernel: { type: 'linear', featureMap: 'elu+1' },
    });
    expect(spec.mask?.name).toBe('causal');
    expect(() =>
      defineAttention({
        batch: 1,
        headsQ: 1,
        seqQ: 8,
        seqKV: 8,
        headDim: 4,
        mask: slidingWindow(4),
        kernel: { type: 'linear', featureMap: 'elu+1' },
      }),
    ).toThrow(SpecError);
  });

  it('refuses a per-head pattern in a spec with another head count', () => {
    const spec = specOf(longformer({ window: 8, dilation: [1, 2] }), 4);
    expect(() => blockLayout(spec)).toThrow(/has values for 2 query heads but is used with 4/);
  });
});
