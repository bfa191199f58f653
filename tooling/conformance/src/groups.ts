// The catalogue's case groups: the pattern × heads × score-modification cross product, then
// sizes, edge cases, linear kernels, dtypes and layouts. Each is a CaseDef: sizes now, specs later.
import { type FeatureMap, lit, maskMod, scoreMod, tensor, where } from '@tessera/core';
import { bigBird, causal, full, intersect, not, slidingWindow } from '@tessera/patterns';
import { alibi, softcap } from './mods.js';
import { PATTERNS, type PatternShape } from './patterns.js';
import type { CaseDef, Profile, Shape } from './types.js';

const HEADS = [
  { name: 'mha', headsQ: 4, headsKV: 4 },
  { name: 'gqa', headsQ: 6, headsKV: 2 },
  { name: 'mqa', headsQ: 3, headsKV: 1 },
] as const;

const MODS = [
  { name: 'none', make: (_h: number) => undefined, amp: 1 },
  { name: 'alibi', make: (h: number) => alibi(h), amp: 1 },
  { name: 'softcap', make: (_h: number) => softcap(3), amp: 2 },
] as const;

type Size = Pick<Shape, 'seqQ' | 'seqKV' | 'headDim' | 'headDimV'>;

/** Sizes the pattern × heads × mod cross product cycles through: odd, unequal, varied head dims. */
const CROSS_SIZES: Readonly<Record<Profile, readonly Size[]>> = {
  ci: [
    { seqQ: 7, seqKV: 7, headDim: 16 },
    { seqQ: 45, seqKV: 45, headDim: 40 },
    { seqQ: 64, seqKV: 97, headDim: 64, headDimV: 32 },
    { seqQ: 129, seqKV: 129, headDim: 128 },
    { seqQ: 100, seqKV: 61, headDim: 40 },
    { seqQ: 33, seqKV: 33, headDim: 64 },
  ],
  full: [
    { seqQ: 7, seqKV: 7, headDim: 16 },
    { seqQ: 333, seqKV: 333, headDim: 40 },
    { seqQ: 256, seqKV: 1000, headDim: 64, headDimV: 32 },
    { seqQ: 1000, seqKV: 1000, headDim: 128 },
    { seqQ: 1000, seqKV: 333, headDim: 40 },
    { seqQ: 513, seqKV: 513, headDim: 64 },
  ],
};

export function patternCases(profile: Profile, cross: 'cover' | 'all'): CaseDef[] {
  const sizes = CROSS_SIZES[profile];
  const defs: CaseDef[] = [];
  PATTERNS.forEach((pattern, pi) => {
    HEADS.forEach((heads, hi) => {
      MODS.forEach((mod, mi) => {
        // A Latin square: per pattern, each heads config and each mod once.
        if (cross === 'cover' && (pi + hi + mi) % 3 !== 0) return;
        const k = pi * 9 + hi * 3 + mi;
        const size = sizes[(pi + hi * 2 + mi) % sizes.length];
        const shape: Shape = {
          batch: k % 5 === 0 ? 2 : 1,
          headsQ: heads.headsQ,
          headsKV: heads.headsKV,
          ...size,
          layout: k % 7 === 3 ? 'bshd' : 'bhsd',
        };
        defs.push({
          id: `pattern/${pattern.name}/${heads.name}/${mod.name}`,
          tags: [
            'pattern',
            `pattern:${pattern.name}`,
            ...pattern.builders.map((b) => `builder:${b}`),
            ...pattern.tags,
            ...(mod.name === 'alibi' ? ['tensor', 'score-tensor'] : []),
          ],
          shape,
          amp: mod.amp,
          extra: (seed) => {
            const ps: PatternShape = { ...shape, seed };
            // Small block hints on a third of the cases, so layouts have many blocks here too.
            const tiling = k % 3 === 1 ? { blockQ: 16, blockKV: 32 } : undefined;
            return { mask: pattern.make(ps), scoreMod: mod.make(shape.headsQ), tiling };
          },
        });
      });
    });
  });
  return defs;
}

const one = (headsQ: number, headsKV: number, seqQ: number, seqKV: number, headDim: number) => ({
  batch: 1,
  headsQ,
  headsKV,
  seqQ,
  seqKV,
  headDim,
});

export function sizeCases(): CaseDef[] {
  return [
    {
      id: 'size/seq-1',
      tags: ['size'],
      shape: one(4, 2, 1, 1, 16),
      extra: () => ({ mask: causal() }),
    },
    { id: 'size/decode-1x1000', tags: ['size'], shape: one(8, 2, 1, 1000, 128) },
    {
      id: 'size/s7-d40-causal',
      tags: ['size'],
      shape: one(2, 2, 7, 7, 40),
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'size/s333-d40-window',
      tags: ['size'],
      shape: one(6, 2, 333, 333, 40),
      extra: () => ({ mask: slidingWindow(64) }),
    },
    {
      id: 'size/s333x1000-d64-alibi',
      tags: ['size', 'tensor', 'score-tensor'],
      shape: one(4, 4, 333, 1000, 64),
      extra: () => ({ mask: full(), scoreMod: alibi(4) }),
    },
    {
      id: 'size/s1000-d64-causal-mqa',
      tags: ['size'],
      shape: one(3, 1, 1000, 1000, 64),
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'size/s1000-d128-bigbird',
      tags: ['size'],
      shape: one(2, 1, 1000, 1000, 128),
      extra: (seed) => ({
        mask: bigBird({
          window: 3,
          globalBlocks: 1,
          randomBlocks: 2,
          block: 64,
          seed,
          seqKV: 1000,
        }),
      }),
    },
    {
      id: 'size/s1000x333-d16-causal',
      tags: ['size'],
      shape: one(4, 2, 1000, 333, 16),
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'size/d40-dv24-softcap',
      tags: ['size'],
      shape: { ...one(4, 2, 77, 77, 40), headDimV: 24 },
      amp: 2,
      extra: () => ({ mask: causal(), scoreMod: softcap(3) }),
    },
    {
      id: 'size/batch-3-per-batch-documents',
      tags: ['size', 'tensor', 'batch'],
      shape: { ...one(2, 1, 50, 50, 16), batch: 3 },
      extra: () => {
        // Ids differ per batch: the mask reads b (layouts then have a slice per batch).
        const ids = tensor(
          Int32Array.from({ length: 150 }, (_, i) =>
            Math.floor((i % 50) / (3 + Math.floor(i / 50) * 4)),
          ),
        );
        return {
          mask: maskMod(({ b, q, kv }) => ids.at(b.mul(50).add(q)).eq(ids.at(b.mul(50).add(kv))), {
            name: 'documents-per-batch',
          }),
        };
      },
    },
    {
      id: 'size/tiling-16x32',
      tags: ['size', 'tiling'],
      shape: one(4, 2, 150, 150, 64),
      extra: () => ({ mask: causal(), tiling: { blockQ: 16, blockKV: 32 } }),
    },
    {
      id: 'size/tiling-128x16',
      tags: ['size', 'tiling'],
      shape: one(4, 4, 150, 200, 32),
      extra: () => ({
        mask: slidingWindow(40, { causal: false }),
        tiling: { blockQ: 128, blockKV: 16 },
      }),
    },
  ];
}

export function edgeCases(): CaseDef[] {
  const extreme = { out: 5e-3, lse: 1e-4 };
  // An f32 score near ±1e4 carries ~1e-3 absolute error, which P and dS = P(dP − D) inherit.
  const extremeGradient = { qkv: 1e-2, tensors: 1e-2 };
  return [
    {
      id: 'masked/everything',
      tags: ['masked-rows'],
      shape: one(2, 1, 20, 20, 16),
      extra: () => ({ mask: intersect(causal(), not(causal())) }),
    },
    {
      id: 'masked/every-third-row',
      tags: ['masked-rows'],
      shape: one(4, 2, 40, 40, 32),
      extra: () => ({
        mask: maskMod(({ q, kv }) => q.mod(3).ne(0).and(kv.le(q)), { name: 'every-third-row' }),
      }),
    },
    {
      id: 'masked/rows-alibi',
      tags: ['masked-rows', 'tensor', 'score-tensor', 'seqQ≠seqKV'],
      shape: { ...one(6, 2, 36, 29, 24), batch: 2 },
      // Rows q % 4 == 1 see no key: they must add nothing to dk, dv or the slopes' gradient.
      extra: () => ({
        mask: maskMod(({ q, kv }) => q.mod(4).ne(1).and(kv.le(q)), { name: 'empty-rows-causal' }),
        scoreMod: alibi(6),
      }),
    },
    {
      id: 'masked/score-minus-infinity',
      tags: ['masked-rows', 'neg-inf-score'],
      shape: one(4, 2, 30, 30, 16),
      // log(0) = -Infinity: keys kv % 4 == 0 and whole rows q % 5 == 0 are masked by the score.
      extra: () => ({
        scoreMod: scoreMod(
          ({ score, q, kv }) =>
            where(kv.mod(4).eq(0).or(q.mod(5).eq(0)), lit(0, 'f32'), lit(1, 'f32'))
              .log()
              .add(score),
          { name: 'log-zero' },
        ),
      }),
    },
    {
      id: 'extreme/scores-1e4',
      tags: ['extreme'],
      shape: one(4, 2, 77, 77, 16),
      tolerance: extreme,
      gradientTolerance: extremeGradient,
      extra: () => ({ scale: 2500, mask: causal() }),
    },
    {
      id: 'extreme/offset-plus-1e4',
      tags: ['extreme'],
      shape: one(2, 2, 50, 50, 32),
      tolerance: extreme,
      gradientTolerance: extremeGradient,
      extra: () => ({
        mask: slidingWindow(12),
        scoreMod: scoreMod(({ score }) => score.add(1e4), { name: 'plus-1e4' }),
      }),
    },
    {
      id: 'extreme/offset-minus-1e4',
      tags: ['extreme'],
      shape: one(2, 1, 50, 50, 32),
      tolerance: extreme,
      gradientTolerance: extremeGradient,
      extra: () => ({ scoreMod: scoreMod(({ score }) => score.sub(1e4), { name: 'minus-1e4' }) }),
    },
    {
      id: 'tensor/relative-bias',
      tags: ['tensor', 'score-tensor'],
      shape: one(4, 2, 60, 60, 32),
      extra: () => {
        // Offsets beyond ±40 read out of range and get 0, on every backend.
        const table = tensor(Float32Array.from({ length: 81 }, (_, i) => Math.sin(i / 3)));
        return {
          mask: causal(),
          scoreMod: scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(40))), {
            name: 'relative-bias',
          }),
        };
      },
    },
    {
      id: 'tensor/relative-bias-per-head',
      tags: ['tensor', 'score-tensor', 'per-head'],
      shape: { ...one(4, 2, 48, 48, 32), batch: 2, layout: 'bshd' },
      extra: () => {
        // A T5-style table per query head, 23 offsets each: every read is in range.
        const table = tensor(Float32Array.from({ length: 4 * 23 }, (_, i) => Math.cos(i / 5)));
        return {
          mask: slidingWindow(12, { causal: false }),
          scoreMod: scoreMod(
            ({ score, h, q, kv }) => score.add(table.at(h.mul(23).add(q.sub(kv)).add(11))),
            { name: 'relative-bias-per-head' },
          ),
        };
      },
    },
    {
      id: 'tensor/per-head-temperature',
      tags: ['tensor', 'score-tensor'],
      shape: one(6, 3, 40, 40, 16),
      extra: () => {
        const temp = tensor(Float32Array.from({ length: 6 }, (_, h) => 0.5 + h * 0.4));
        return {
          scoreMod: scoreMod(({ score, h }) => score.mul(temp.at(h)), { name: 'temperature' }),
        };
      },
    },
    {
      id: 'scale/negative',
      tags: ['scale'],
      shape: one(2, 2, 30, 30, 16),
      extra: () => ({ scale: -0.3, mask: causal() }),
    },
  ];
}

export function linearCases(): CaseDef[] {
  const maps: FeatureMap[] = ['elu+1', 'relu', 'favor+', 'trig-rf'];
  const defs: CaseDef[] = [];
  for (const featureMap of maps) {
    for (const isCausal of [false, true]) {
      for (const heads of [HEADS[0], HEADS[1]]) {
        const random = featureMap === 'favor+' || featureMap === 'trig-rf';
        defs.push({
          id: `linear/${featureMap}/${isCausal ? 'causal' : 'non-causal'}/${heads.name}`,
          tags: ['linear', `linear:${featureMap}`],
          shape: {
            ...one(heads.headsQ, heads.headsKV, isCausal ? 100 : 64, isCausal ? 61 : 130, 32),
            headDimV: heads.name === 'gqa' ? 24 : 32,
          },
          // Small inputs keep the trig-rf normaliser well away from 0.
          amp: featureMap === 'trig-rf' ? 0.5 : 1,
          tolerance: featureMap === 'trig-rf' ? { out: 1e-3, lse: 1e-3 } : undefined,
          // The normaliser that cancels in the forward (1e-3) is divided by once more in the backward.
          gradientTolerance: featureMap === 'trig-rf' ? { qkv: 5e-3, tensors: 1e-2 } : undefined,
          extra: (seed) => ({
            mask: isCausal ? causal() : undefined,
            kernel: random
              ? { type: 'linear', featureMap, features: featureMap === 'favor+' ? 64 : 32, seed }
              : { type: 'linear', featureMap },
          }),
        });
      }
    }
  }
  return defs;
}

export function dtypeCases(): CaseDef[] {
  const defs: CaseDef[] = [];
  for (const dtype of ['f16', 'bf16'] as const) {
    defs.push(
      {
        id: `dtype/${dtype}/causal-gqa`,
        tags: [],
        shape: { ...one(6, 2, 90, 90, 64), dtype },
        extra: () => ({ mask: causal() }),
      },
      {
        id: `dtype/${dtype}/window-alibi`,
        tags: ['tensor', 'score-tensor'],
        shape: { ...one(4, 4, 70, 70, 40), dtype },
        amp: 2,
        extra: () => ({ mask: slidingWindow(16), scoreMod: alibi(4) }),
      },
      {
        id: `dtype/${dtype}/bigbird-mqa`,
        tags: [],
        shape: { ...one(3, 1, 128, 128, 128), dtype },
        extra: (seed) => ({
          mask: bigBird({
            window: 3,
            globalBlocks: 1,
            randomBlocks: 1,
            block: 16,
            seed,
            seqKV: 128,
          }),
        }),
      },
      {
        id: `dtype/${dtype}/linear-favor`,
        tags: ['linear', 'linear:favor+'],
        shape: { ...one(4, 2, 60, 60, 32), dtype },
        extra: (seed) => ({
          mask: causal(),
          kernel: { type: 'linear', featureMap: 'favor+', features: 64, seed },
        }),
      },
    );
  }
  return defs;
}

export function layoutCases(): CaseDef[] {
  const bshd = (s: ReturnType<typeof one>): Shape => ({ ...s, layout: 'bshd' });
  return [
    {
      id: 'layout/bshd/causal-mha',
      tags: [],
      shape: bshd(one(4, 4, 57, 57, 32)),
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'layout/bshd/window-gqa-alibi',
      tags: ['tensor', 'score-tensor'],
      shape: { ...bshd(one(6, 2, 80, 96, 40)), batch: 2 },
      extra: () => ({ mask: slidingWindow(20, { causal: false }), scoreMod: alibi(6) }),
    },
    {
      id: 'layout/bshd/dv-differs',
      tags: [],
      shape: { ...bshd(one(3, 1, 41, 29, 16)), headDimV: 48 },
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'layout/bshd/linear-elu',
      tags: ['linear', 'linear:elu+1'],
      shape: bshd(one(4, 2, 50, 50, 16)),
      extra: () => ({ mask: causal(), kernel: { type: 'linear', featureMap: 'elu+1' } }),
    },
  ];
}

/** Larger cases only in the 'full' profile. */
export function fullOnlyCases(): CaseDef[] {
  return [
    {
      id: 'full/s2048-causal-gqa',
      tags: ['size'],
      shape: one(8, 2, 2048, 2048, 64),
      extra: () => ({ mask: causal() }),
    },
    {
      id: 'full/s4096-window-256',
      tags: ['size'],
      shape: one(4, 4, 4096, 4096, 64),
      extra: () => ({ mask: slidingWindow(256) }),
    },
  ];
}
