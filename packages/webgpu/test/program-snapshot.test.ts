// The generated WGSL of the program kernels, pinned: a change to an emitter shows up as a diff.
// The emitters need no device; the same inputs must give the same text.
import { type CompressedStep, defineAttention, SpecError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import {
  emitSummaryFeatures,
  featureLayout,
  featureMapPlan,
  specFeaturePlan,
} from '../src/program/compressed-features.js';
import { emitCompressed } from '../src/program/compressed-kernel.js';
import { emitGroupSort, emitRoute } from '../src/program/group-kernel.js';
import { emitGroupedAttend } from '../src/program/grouped-attend-kernel.js';
import {
  emitDense,
  emitGate,
  emitMerge,
  emitPool,
  emitProject,
  emitSubtract,
} from '../src/program/kernels.js';
import { emitRound } from '../src/program/round-kernel.js';
import { emitSelect, emitSubdivide } from '../src/program/select-kernel.js';

const x = { batch: 2, heads: 4, rows: 45, cols: 8 };
const compressed = {
  batch: 2,
  heads: 4,
  headsKV: 2,
  rows: 45,
  headDim: 8,
  cols: 8,
  block: 8,
  seqKV: 45,
  scale: 0.35355339059327373,
};

/** The work layout of a compressed step with `kernel` over the summaries above (2 × 2 × 6). */
const features = (kernel: NonNullable<CompressedStep['kernel']>) =>
  featureLayout(
    featureMapPlan(
      {
        op: 'compressed',
        out: 'o',
        q: 'q',
        k: 'k',
        v: 'v',
        block: 8,
        seqKV: 45,
        causal: false,
        scale: compressed.scale,
        kernel,
      },
      8,
    ),
    2 * 2 * 6,
  );
const favor = features({ featureMap: 'favor+', features: 16, seed: 1 });
const summaries = { batch: 2, headsKV: 2, numBlocks: 6, headDim: 8 };

const grouping = { batch: 2, heads: 4, rows: 45, cols: 8, clusters: 5 };
const grouped = {
  batch: 2,
  headsQ: 4,
  headsKV: 2,
  seqQ: 45,
  seqKV: 45,
  headDim: 8,
  headDimV: 8,
  scale: 0.35355339059327373,
  sizeQ: 8,
  sizeKV: 8,
  headsGroupQ: 4,
};
/** The work layout of a linear spec's key features over the keys above (2 × 2 × 45). */
const linearFeatures = (kernel: {
  type: 'linear';
  featureMap: 'favor+' | 'elu+1' | 'trig-rf';
  features?: number;
}) =>
  featureLayout(
    specFeaturePlan(
      defineAttention({ batch: 2, headsQ: 4, headsKV: 2, seqQ: 45, headDim: 8, kernel }),
    ),
    2 * 2 * 45,
  );
const keys = { batch: 2, headsKV: 2, numBlocks: 45, headDim: 8 };

const sources: Record<string, () => string> = {
  'pool-mean': () => emitPool(x, 8, false),
  'pool-weighted': () => emitPool(x, 8, true),
  project: () => emitProject(x, 7),
  'dense-bias-relu': () => emitDense(x, 5, true, true),
  gate: () => emitGate(x, 6, 3),
  merge: () => emitMerge(2 * 4 * 45, 8, 2),
  select: () =>
    emitSelect({
      batch: 2,
      headsQ: 4,
      headsKV: 2,
      headDim: 8,
      blockQ: 16,
      blockKV: 8,
      numQBlocks: 3,
      numKVBlocks: 6,
      local: 1,
      candidateBatches: 1,
      candidateHeads: 1,
      candidateEntries: 4,
      selectionEntries: 25,
      maxCandidates: 6,
    }),
  'select-subdivide': () => emitSubdivide(40, 2, 25, 25),
  'round-f16': () => emitRound(720, 'f16'),
  'round-bf16': () => emitRound(720, 'bf16'),
  'compressed-causal': () => emitCompressed({ ...compressed, causal: true }),
  'compressed-selection-exclude': () =>
    emitCompressed({
      ...compressed,
      causal: true,
      selection: { mode: 'exclude', blockQ: 16, numQBlocks: 3, entries: 25 },
    }),
  'compressed-selection-only': () =>
    emitCompressed({
      ...compressed,
      causal: false,
      selection: { mode: 'only', blockQ: 16, numQBlocks: 3, entries: 25 },
    }),
  'compressed-skip-own-block': () =>
    emitCompressed({ ...compressed, causal: false, skipOwnBlock: true }),
  'compressed-favor-causal-selection': () =>
    emitCompressed({
      ...compressed,
      causal: true,
      features: favor,
      selection: { mode: 'exclude', blockQ: 16, numQBlocks: 3, entries: 25 },
    }),
  'compressed-relu-skip-own-block': () =>
    emitCompressed({
      ...compressed,
      causal: false,
      skipOwnBlock: true,
      features: features({ featureMap: 'relu' }),
    }),
  'compressed-summary-features-favor': () => emitSummaryFeatures(summaries, favor),
  'compressed-summary-features-elu': () =>
    emitSummaryFeatures(summaries, features({ featureMap: 'elu+1' })),
  'group-route': () => emitRoute(grouping),
  'group-sort': () => emitGroupSort(grouping),
  'grouped-attend-softmax-causal': () => emitGroupedAttend({ ...grouped, causal: true }),
  'grouped-attend-favor': () =>
    emitGroupedAttend({
      ...grouped,
      causal: true,
      sizeKV: 16,
      features: linearFeatures({ type: 'linear', featureMap: 'favor+', features: 16 }),
    }),
  // One grouping of the keys serves the queries too: query heads read their KV head's slice.
  'grouped-attend-softmax-key-grouping': () =>
    emitGroupedAttend({ ...grouped, causal: true, headsGroupQ: 2 }),
  'grouped-attend-elu': () =>
    emitGroupedAttend({
      ...grouped,
      causal: false,
      features: linearFeatures({ type: 'linear', featureMap: 'elu+1' }),
    }),
  'grouped-attend-key-features-trig': () =>
    emitSummaryFeatures(
      keys,
      linearFeatures({ type: 'linear', featureMap: 'trig-rf', features: 8 }),
      "grouped attention's key features",
    ),
  subtract: () => emitSubtract(2 * 4 * 45, 8),
};

describe('generated program WGSL snapshots', () => {
  for (const [name, emit] of Object.entries(sources)) {
    it(name, async () => {
      const code = emit();
      expect(emit()).toBe(code); // deterministic
      await expect(code).toMatchFileSnapshot(`__snapshots__/program-${name}.wgsl`);
    });
  }
});

describe('grouped attend: the query grouping covers headsQ or headsKV heads', () => {
  it('any other head count is refused with SpecError', () => {
    expect(() => emitGroupedAttend({ ...grouped, causal: true, headsGroupQ: 1 })).toThrow(
      SpecError,
    );
    expect(() => emitGroupedAttend({ ...grouped, causal: true, headsGroupQ: 1 })).toThrow(
      /query grouping covers 1 heads/,
    );
  });
});
