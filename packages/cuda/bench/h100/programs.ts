// Attention programs on the CUDA backend against the cpu reference: every step alone and whole
// programs (pool → select → attend with the selection + compressed excluding it → merge; gate),
// with GQA, ragged blocks, causal (with fully masked rows) and not, f32 and bf16; f32 attend on
// 64×64 selections and on 8×8 ones (the per-row kernel); compressed with feature maps and
// skipOwnBlock; content grouping (group → grouped attend, softmax and feature maps; subtract; a
// Linearized-Grouped-Attention-like program). Run on a GPU by `run.mjs --programs`;
// test/program-emulate.test.ts runs the small size on the emulated device.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AttentionSpec,
  type CompressedKernel,
  defineAttention,
  defineProgram,
  type KernelConfig,
  maskMod,
  type Program,
  type ProgramBackend,
  type ProgramStep,
  runProgram,
  type Shape,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import type { CudaBackend } from '../../src/index.js';

export interface ProgramCase {
  readonly name: string;
  readonly program: Program;
  readonly inputs: Readonly<Record<string, Float32Array>>;
  /** |got − want| ≤ tol · (1 + |want|) elementwise; −∞ must match exactly. */
  readonly tol: number;
}

export interface ProgramCheck {
  readonly name: string;
  readonly pass: boolean;
  /** Worst error as a multiple of the tolerance. */
  readonly worst: number;
  readonly message: string;
}

function seeded(n: number, seed: number, amp = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
  return out;
}

const count = (s: Shape): number => s[0] * s[1] * s[2] * s[3];

/** Causal, with every fifth query row fully masked (empty rows must give 0 and −∞). */
const causalGaps = maskMod(({ q, kv }) => q.mod(5).ne(0).and(q.ge(kv)), {
  name: 'causal-every-fifth-row-empty',
});

interface Size {
  readonly B: number;
  readonly H: number;
  readonly HK: number;
  readonly S: number;
  readonly D: number;
  /** Select blocks per dtype (the CUDA-core kernel takes 32 keys per block). */
  readonly blocks: Readonly<Record<'f32' | 'bf16', { bq: number; bkv: number; topK: number }>>;
  /** bf16 head dim (the emulated device has no tensor cores: a dim the mma path cannot take). */
  readonly D16: number;
  /** Top-k and forced local blocks of the f32 8×8-selection case (the per-row kernel). */
  readonly topK8: number;
  readonly local8: number;
  /** Key counts of the f32 64×64-selection cases, and their top-k. */
  readonly seqs64: readonly number[];
  readonly topK64: number;
  readonly local64: number;
  /** Summary block and favor+ feature counts of the feature-map compressed cases. */
  readonly compressedBlock: number;
  readonly favorFeatures: readonly number[];
  /** Rows per group, clusters, and a cluster count above the rows (so some stay empty). */
  readonly groupSize: number;
  readonly clusters: number;
  readonly manyClusters: number;
}

const SIZES: Record<'small' | 'device', Size> = {
  small: {
    B: 2,
    H: 4,
    HK: 2,
    S: 75,
    D: 16,
    D16: 20,
    blocks: { f32: { bq: 16, bkv: 32, topK: 2 }, bf16: { bq: 16, bkv: 32, topK: 2 } },
    topK8: 3,
    local8: 1,
    seqs64: [75, 96],
    topK64: 1,
    local64: 0,
    compressedBlock: 16,
    favorFeatures: [32, 64],
    groupSize: 16,
    clusters: 4,
    manyClusters: 80,
  },
  device: {
    B: 2,
    H: 8,
    HK: 2,
    S: 1000,
    D: 64,
    D16: 64,
    blocks: { f32: { bq: 32, bkv: 32, topK: 6 }, bf16: { bq: 64, bkv: 64, topK: 4 } },
    topK8: 16,
    local8: 2,
    seqs64: [1000, 992],
    topK64: 4,
    local64: 1,
    compressedBlock: 64,
    favorFeatures: [64, 256],
    groupSize: 64,
    clusters: 8,
    manyClusters: 1024,
  },
};

/** The cases: `small` for the host emulation, `device` for a GPU. */
export function programCases(size: 'small' | 'device'): ProgramCase[] {
  const z = SIZES[size];
  const { B, H, HK, S } = z;
  const cases: ProgramCase[] = [];
  let seed = 1;
  const make = (
    name: string,
    inputs: Record<string, Shape>,
    steps: ProgramStep[],
    outputs: string[],
    tol = 2e-4,
    amps: Record<string, number> = {},
    fixed: Record<string, Float32Array> = {},
  ) => {
    const program = defineProgram({ inputs, steps, outputs });
    const data: Record<string, Float32Array> = {};
    for (const [n, s] of Object.entries(inputs)) {
      const random = seeded(count(s), seed++, amps[n] ?? 1);
      data[n] = fixed[n] ?? random;
    }
    cases.push({ name, program, inputs: data, tol });
  };
  const D = z.D;
  const x: Shape = [B, H, S, D];

  // ---- each small step alone
  make(
    'pool (softmax weights, ragged last block)',
    { x, w: [1, H, 1, 16] },
    [{ op: 'pool', out: 'y', x: 'x', block: 16, weights: 'w' }],
    ['y'],
    2e-4,
    { w: 3 },
  );
  make('pool (mean)', { x }, [{ op: 'pool', out: 'y', x: 'x', block: 7 }], ['y']);
  make(
    'project',
    { x, m: [1, 1, 12, S] },
    [{ op: 'project', out: 'y', x: 'x', matrix: 'm' }],
    ['y'],
  );
  make(
    'dense (bias, relu)',
    { x, w: [1, H, D, 24], b: [1, H, 1, 24] },
    [{ op: 'dense', out: 'y', x: 'x', weight: 'w', bias: 'b', activation: 'relu' }],
    ['y'],
  );
  make(
    'dense (no bias)',
    { x, w: [1, H, D, 8] },
    [{ op: 'dense', out: 'y', x: 'x', weight: 'w' }],
    ['y'],
  );
  const lse: Shape = [B, H, S, 1];
  make(
    'merge (3 branches)',
    { a: x, la: lse, b: x, lb: lse, c: x, lc: lse },
    [
      {
        op: 'merge',
        out: 'y',
        lse: 'ly',
        branches: [
          { out: 'a', lse: 'la' },
          { out: 'b', lse: 'lb' },
          { out: 'c', lse: 'lc' },
        ],
      },
    ],
    ['y', 'ly'],
    2e-4,
    { la: 4, lb: 4, lc: 4 },
  );
  make(
    'gate (2 branches)',
    { x, a: x, b: x, w: [1, 2, H, D], bias: [1, 1, 2, H] },
    [{ op: 'gate', out: 'y', x: 'x', weight: 'w', bias: 'bias', branches: ['a', 'b'] }],
    ['y'],
  );

  // ---- attention steps, causal (with empty rows) and not, f32 and bf16
  for (const dtype of ['f32', 'bf16'] as const) {
    for (const isCausal of [true, false]) {
      const d = dtype === 'f32' ? D : z.D16;
      const spec: AttentionSpec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: S,
        headDim: d,
        dtype,
        ...(isCausal ? { mask: causalGaps } : {}),
      });
      const tag = `${dtype}, ${isCausal ? 'causal with empty rows' : 'no mask'}, GQA ${H}/${HK}`;
      const tol = dtype === 'f32' ? 2e-4 : 2e-2;
      const qS: Shape = [B, H, S, d];
      const kS: Shape = [B, HK, S, d];
      const { bq, bkv, topK } = z.blocks[dtype];
      make(
        `attend (${tag})`,
        { q: qS, k: kS, v: kS },
        [{ op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v' }],
        ['o', 'l'],
        tol,
        { q: 2, k: 2 },
      );
      if (dtype === 'f32')
        make(
          `compressed (${tag})`,
          { q: qS, k: [B, HK, Math.ceil(S / bkv), d], v: [B, HK, Math.ceil(S / bkv), d] },
          [
            {
              op: 'compressed',
              out: 'o',
              lse: 'l',
              q: 'q',
              k: 'k',
              v: 'v',
              block: bkv,
              seqKV: S,
              causal: isCausal,
              scale: spec.scale,
            },
          ],
          ['o', 'l'],
          tol,
          { q: 2, k: 2 },
        );
      const selected = (mode: 'exclude' | 'only'): ProgramStep[] => [
        { op: 'pool', out: 'qp', x: 'q', block: bq },
        { op: 'pool', out: 'kp', x: 'k', block: bkv },
        { op: 'pool', out: 'vp', x: 'v', block: bkv },
        {
          op: 'select',
          out: 'sel',
          q: 'qp',
          k: 'kp',
          spec,
          blockQ: bq,
          blockKV: bkv,
          topK,
          local: 1,
        },
        { op: 'attend', out: 'o1', lse: 'l1', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
        {
          op: 'compressed',
          out: 'o2',
          lse: 'l2',
          q: 'q',
          k: 'kp',
          v: 'vp',
          block: bkv,
          seqKV: S,
          causal: isCausal,
          scale: spec.scale,
          selection: 'sel',
          selectionMode: mode,
        },
      ];
      make(
        `program: pool → select → attend(selection) + compressed(exclude) → merge; gate (${tag})`,
        {
          q: qS,
          k: kS,
          v: kS,
          gw: [1, 2, H, d],
          gb: [1, 1, 2, H],
        },
        [
          ...selected('exclude'),
          {
            op: 'merge',
            out: 'o',
            lse: 'l',
            branches: [
              { out: 'o1', lse: 'l1' },
              { out: 'o2', lse: 'l2' },
            ],
          },
          { op: 'gate', out: 'g', x: 'q', weight: 'gw', bias: 'gb', branches: ['o1', 'o2'] },
        ],
        ['o', 'l', 'g', 'l1'],
        tol,
        { q: 2, k: 2 },
      );
      if (dtype === 'f32')
        make(
          `program: select → compressed(only) (${tag})`,
          { q: qS, k: kS, v: kS },
          selected('only'),
          ['o2', 'l2'],
          tol,
          { q: 2, k: 2 },
        );
    }
  }
  selectionsOf64(make, z);
  selectionsOfSmallBlocks(make, z);
  featureCompressed(make, z);
  const linear = defineAttention({
    batch: B,
    headsQ: H,
    headsKV: HK,
    seqQ: S,
    headDim: D,
    kernel: { type: 'linear', featureMap: 'elu+1' },
  });
  make(
    'attend (linear elu+1, GQA)',
    { q: x, k: [B, HK, S, D], v: [B, HK, S, D] },
    [{ op: 'attend', out: 'o', lse: 'l', spec: linear, q: 'q', k: 'k', v: 'v' }],
    ['o'],
    1e-3,
  );
  groupedCases(make, z);
  return cases;
}

type Make = (
  name: string,
  inputs: Record<string, Shape>,
  steps: ProgramStep[],
  outputs: string[],
  tol?: number,
  amps?: Record<string, number>,
  fixed?: Record<string, Float32Array>,
) => void;

/**
 * f32 attend on selections of 64×64 blocks (the standard systems' blocks), which the CUDA-core
 * kernel walks as 32-key blocks after expanding the selection on the device. Two key counts: one
 * with a ragged last 32-key block, one a multiple of 32 but not of 64 (the last block's second half
 * lies wholly past the keys and must be dropped: the kernel has no key bound there). Causal with
 * empty rows and not, GQA; select → attend(selection), merged with compressed(exclude).
 */
function selectionsOf64(make: Make, z: Size): void {
  const { B, H, HK, D } = z;
  for (const S of z.seqs64) {
    for (const isCausal of [true, false]) {
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: S,
        headDim: D,
        ...(isCausal ? { mask: causalGaps } : {}),
      });
      const nk = Math.ceil(S / 64);
      make(
        `attend(selection of 64×64 blocks) + compressed(exclude) → merge (f32, S=${S}, ${isCausal ? 'causal with empty rows' : 'no mask'}, GQA ${H}/${HK})`,
        { q: [B, H, S, D], k: [B, HK, S, D], v: [B, HK, S, D] },
        [
          { op: 'pool', out: 'qp', x: 'q', block: 64 },
          { op: 'pool', out: 'kp', x: 'k', block: 64 },
          { op: 'pool', out: 'vp', x: 'v', block: 64 },
          {
            op: 'select',
            out: 'sel',
            q: 'qp',
            k: 'kp',
            spec,
            blockQ: 64,
            blockKV: 64,
            topK: Math.min(nk - 1, z.topK64),
            local: z.local64,
          },
          { op: 'attend', out: 'o1', lse: 'l1', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
          {
            op: 'compressed',
            out: 'o2',
            lse: 'l2',
            q: 'q',
            k: 'kp',
            v: 'vp',
            block: 64,
            seqKV: S,
            causal: isCausal,
            scale: spec.scale,
            selection: 'sel',
            selectionMode: 'exclude',
          },
          {
            op: 'merge',
            out: 'o',
            lse: 'l',
            branches: [
              { out: 'o1', lse: 'l1' },
              { out: 'o2', lse: 'l2' },
            ],
          },
        ],
        ['o1', 'l1', 'o', 'l'],
        2e-4,
        { q: 2, k: 2 },
      );
    }
  }
}

/**
 * f32 attend on a selection of 8×8 blocks (the standard systems' blocks at short sequences), which
 * the flash kernel cannot walk (the CUDA-core one takes 32-key blocks): the per-row kernel walks
 * it. Causal with empty rows, GQA, ragged (S not a multiple of 8); select → attend(selection),
 * merged with compressed(exclude) over the 8-key summaries.
 */
function selectionsOfSmallBlocks(make: Make, z: Size): void {
  const { B, H, HK, S, D } = z;
  const spec = defineAttention({
    batch: B,
    headsQ: H,
    headsKV: HK,
    seqQ: S,
    headDim: D,
    mask: causalGaps,
  });
  make(
    `attend(selection of 8×8 blocks, per-row kernel) + compressed(exclude) → merge (f32, S=${S}, causal with empty rows, GQA ${H}/${HK}, top ${z.topK8})`,
    { q: [B, H, S, D], k: [B, HK, S, D], v: [B, HK, S, D] },
    [
      { op: 'pool', out: 'qp', x: 'q', block: 8 },
      { op: 'pool', out: 'kp', x: 'k', block: 8 },
      { op: 'pool', out: 'vp', x: 'v', block: 8 },
      {
        op: 'select',
        out: 'sel',
        q: 'qp',
        k: 'kp',
        spec,
        blockQ: 8,
        blockKV: 8,
        topK: z.topK8,
        local: z.local8,
      },
      { op: 'attend', out: 'o1', lse: 'l1', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
      {
        op: 'compressed',
        out: 'o2',
        lse: 'l2',
        q: 'q',
        k: 'kp',
        v: 'vp',
        block: 8,
        seqKV: S,
        causal: true,
        scale: spec.scale,
        selection: 'sel',
        selectionMode: 'exclude',
      },
      {
        op: 'merge',
        out: 'o',
        lse: 'l',
        branches: [
          { out: 'o1', lse: 'l1' },
          { out: 'o2', lse: 'l2' },
        ],
      },
    ],
    ['o1', 'l1', 'o', 'l'],
    2e-4,
    { q: 2, k: 2 },
  );
}

/**
 * compressed with a feature map (favor+ at two feature counts, elu+1, relu) against the cpu's
 * f64 features, causal and bidirectional with skipOwnBlock, GQA; softmax skipOwnBlock; and a
 * favor+ branch excluding a selection.
 */
function featureCompressed(make: Make, z: Size): void {
  const { B, H, HK, S, D } = z;
  const blk = z.compressedBlock;
  const nb = Math.ceil(S / blk);
  const shapes = {
    q: [B, H, S, D] as Shape,
    k: [B, HK, nb, D] as Shape,
    v: [B, HK, nb, D] as Shape,
  };
  const scale = 1 / Math.sqrt(D);
  const kernels: { tag: string; kernel?: CompressedKernel }[] = [
    ...z.favorFeatures.map((features) => ({
      tag: `favor+ ${features}`,
      kernel: { featureMap: 'favor+' as const, features, seed: 7 },
    })),
    { tag: 'elu+1', kernel: { featureMap: 'elu+1' } },
    { tag: 'relu', kernel: { featureMap: 'relu' } },
    { tag: 'softmax' },
  ];
  for (const { tag, kernel } of kernels) {
    for (const [isCausal, skip] of [
      [true, false],
      [false, true],
    ] as const) {
      make(
        `compressed (${tag}, ${isCausal ? 'causal' : 'bidirectional, skipOwnBlock'}, GQA ${H}/${HK}, block ${blk})`,
        shapes,
        [
          {
            op: 'compressed',
            out: 'o',
            lse: 'l',
            q: 'q',
            k: 'k',
            v: 'v',
            block: blk,
            seqKV: S,
            causal: isCausal,
            scale,
            ...(skip ? { skipOwnBlock: true } : {}),
            ...(kernel ? { kernel } : {}),
          },
        ],
        ['o', 'l'],
        kernel ? 5e-4 : 2e-4,
        { q: 2, k: 2 },
      );
    }
  }
  const spec = defineAttention({ batch: B, headsQ: H, headsKV: HK, seqQ: S, headDim: D });
  const features = z.favorFeatures[0] as number;
  make(
    `select → compressed(favor+ ${features}, exclude, skipOwnBlock) (bidirectional, GQA ${H}/${HK})`,
    { q: shapes.q, k: [B, HK, S, D], v: [B, HK, S, D] },
    [
      { op: 'pool', out: 'qp', x: 'q', block: blk },
      { op: 'pool', out: 'kp', x: 'k', block: blk },
      { op: 'pool', out: 'vp', x: 'v', block: blk },
      {
        op: 'select',
        out: 'sel',
        q: 'qp',
        k: 'kp',
        spec,
        blockQ: blk,
        blockKV: blk,
        topK: 2,
        local: 0,
      },
      {
        op: 'compressed',
        out: 'o',
        lse: 'l',
        q: 'q',
        k: 'kp',
        v: 'vp',
        block: blk,
        seqKV: S,
        causal: false,
        scale,
        skipOwnBlock: true,
        kernel: { featureMap: 'favor+', features },
        selection: 'sel',
        selectionMode: 'exclude',
      },
    ],
    ['o', 'l'],
    5e-4,
    { q: 2, k: 2 },
  );
}

/**
 * Content grouping: group → grouped attend (softmax, causal and not, GQA with a grouping per side
 * and MHA with one grouping for both; on the device also GQA with one grouping of the keys for
 * both, query heads reading their KV head's ranks; ragged groups, clusters left empty, size 1 and size = rows;
 * favor+ and elu+1 feature maps), subtract (rows with t = 1, t > 1, a vanishing part and normal
 * ones), and a program like Linearized Grouped Attention: exact grouped softmax + (linear causal
 * attend over all keys − grouped linear attend) merged by log-sum-exp. Tolerances: softmax 2e-4,
 * feature maps 1e-3 (the cpu computes the features in f64, the device in f32).
 */
function groupedCases(make: Make, z: Size): void {
  const { B, H, HK, S, D } = z;
  const G = z.groupSize;
  const scale = 1 / Math.sqrt(D);
  const q: Shape = [B, H, S, D];
  const kv: Shape = [B, HK, S, D];
  const spec = (heads: number, isCausal: boolean, kernel?: KernelConfig) =>
    defineAttention({
      batch: B,
      headsQ: H,
      headsKV: heads,
      seqQ: S,
      headDim: D,
      scale,
      ...(isCausal ? { mask: maskMod(({ q: i, kv: j }) => i.ge(j), { name: 'causal' }) } : {}),
      ...(kernel ? { kernel } : {}),
    });
  // GQA, each side grouped on its own rows.
  const gqa = (name: string, s: AttentionSpec, size: number, clusters: number, tol = 2e-4): void =>
    make(
      `group + grouped attend (${name}, GQA ${H}/${HK}, size ${size}, ${clusters} clusters)`,
      { q, k: kv, v: kv, cq: [1, H, clusters, D], ck: [1, HK, clusters, D] },
      [
        { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size },
        { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size },
        {
          op: 'attend',
          out: 'o',
          lse: 'l',
          spec: s,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'gq',
          groupKV: 'gk',
        },
      ],
      ['o', 'l'],
      tol,
      { q: 2, k: 2 },
    );
  // MHA, queries and keys grouped once (on the keys) and passed to both sides.
  const mha = (name: string, s: AttentionSpec, size: number, clusters: number, tol = 2e-4): void =>
    make(
      `group + grouped attend (${name}, MHA, one grouping, size ${size}, ${clusters} clusters)`,
      { q, k: q, v: q, c: [1, H, clusters, D] },
      [
        { op: 'group', out: 'g', x: 'k', centroids: 'c', size },
        {
          op: 'attend',
          out: 'o',
          lse: 'l',
          spec: s,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'g',
          groupKV: 'g',
        },
      ],
      ['o', 'l'],
      tol,
      { q: 2, k: 2 },
    );
  const favor = { type: 'linear', featureMap: 'favor+', features: 64, seed: 5 } as const;
  const elu = { type: 'linear', featureMap: 'elu+1' } as const;
  gqa('softmax, causal', spec(HK, true), G, z.clusters);
  gqa('softmax, no mask', spec(HK, false), G, z.clusters);
  gqa('softmax, causal', spec(HK, true), 1, z.clusters);
  gqa('softmax, no mask', spec(HK, false), S, z.clusters);
  mha('softmax, causal', spec(H, true), G, z.manyClusters);
  gqa('favor+ 64, causal', spec(HK, true, favor), G, z.clusters, 1e-3);
  mha('elu+1, no mask', spec(H, false, elu), G, z.clusters, 1e-3);
  // GQA, the keys grouped once (over the KV heads) and passed to both sides: query head h reads
  // its KV head's ranks. Device only (the emulator test runs its own small cases of this).
  if (z === SIZES.device)
    make(
      `group + grouped attend (softmax, causal, GQA ${H}/${HK}, one grouping of the keys for both, size ${G}, ${z.clusters} clusters)`,
      { q, k: kv, v: kv, ck: [1, HK, z.clusters, D] },
      [
        { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: G },
        {
          op: 'attend',
          out: 'o',
          lse: 'l',
          spec: spec(HK, true),
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'gk',
          groupKV: 'gk',
        },
      ],
      ['o', 'l'],
      2e-4,
      { q: 2, k: 2 },
    );

  // subtract: per row (by row % 4) part = whole (t = 1: empty), part above whole (t > 1: empty),
  // a vanishing part (t = e^-100: out = whole), and part below whole by 0.05..2.05 (normal).
  const rowS: Shape = [B, H, S, 1];
  const rows = B * H * S;
  const lw = seeded(rows, 901, 3);
  const gap = seeded(rows, 902, 1);
  const lp = lw.map((l, r) => {
    const g = gap[r] as number;
    return [l, l + 0.5 + Math.abs(g), l - 100, l - 1.05 - g][r % 4] as number;
  });
  make(
    'subtract (t = 1, t > 1, vanishing part, normal rows)',
    { ow: q, lw: rowS, op: q, lp: rowS },
    [
      {
        op: 'subtract',
        out: 'o',
        lse: 'l',
        whole: { out: 'ow', lse: 'lw' },
        part: { out: 'op', lse: 'lp' },
      },
    ],
    ['o', 'l'],
    2e-4,
    {},
    { lw, lp },
  );

  // Linearized Grouped Attention: exact softmax inside each group + a favor+ estimate of the
  // rest (all keys before the query less its group's), merged exactly.
  const lga = (isCausal: boolean): void => {
    const exact = spec(H, isCausal);
    const lin = spec(H, isCausal, favor);
    make(
      `program: group → grouped softmax + (linear favor+ − grouped linear) → merge (${isCausal ? 'causal' : 'no mask'}, MHA, size ${G})`,
      { q, k: q, v: q, c: [1, H, z.clusters, D] },
      [
        { op: 'group', out: 'g', x: 'k', centroids: 'c', size: G },
        {
          op: 'attend',
          out: 'o1',
          lse: 'l1',
          spec: exact,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'g',
          groupKV: 'g',
        },
        { op: 'attend', out: 'ow', lse: 'lw', spec: lin, q: 'q', k: 'k', v: 'v' },
        {
          op: 'attend',
          out: 'op',
          lse: 'lp',
          spec: lin,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'g',
          groupKV: 'g',
        },
        {
          op: 'subtract',
          out: 'o2',
          lse: 'l2',
          whole: { out: 'ow', lse: 'lw' },
          part: { out: 'op', lse: 'lp' },
        },
        {
          op: 'merge',
          out: 'o',
          lse: 'l',
          branches: [
            { out: 'o1', lse: 'l1' },
            { out: 'o2', lse: 'l2' },
          ],
        },
      ],
      // o2 alone is ill-conditioned where the group holds nearly every visible key (t → 1); merged
      // it weighs e^{l2}, which brings it back to e^{lw}(o_w − t·o_p).
      ['o', 'l', 'o1', 'l1', 'op', 'lp'],
      1e-3,
      { q: 1, k: 1 },
    );
  };
  lga(true);
  if (z === SIZES.device) lga(false); // the emulated device runs the causal one only (time)
}

/** Runs one case on `backend` and on `reference`, comparing every output. */
export async function checkProgram(
  backend: ProgramBackend,
  reference: ProgramBackend,
  c: ProgramCase,
): Promise<ProgramCheck> {
  try {
    const got = await runProgram(backend, c.program, c.inputs);
    const want = await runProgram(reference, c.program, c.inputs);
    let worst = 0;
    const problems: string[] = [];
    for (const name of c.program.outputs) {
      const g = got.outputs[name] as Float32Array;
      const w = want.outputs[name] as Float32Array;
      if (g.length !== w.length) problems.push(`${name}: ${g.length} values, want ${w.length}`);
      for (let i = 0; i < w.length; i++) {
        const a = g[i] as number;
        const b = w[i] as number;
        if (b === Number.NEGATIVE_INFINITY || a === Number.NEGATIVE_INFINITY || Number.isNaN(a)) {
          if (a !== b) {
            problems.push(`${name}[${i}] = ${a}, want ${b}`);
            worst = Number.POSITIVE_INFINITY;
            break;
          }
          continue;
        }
        const e = Math.abs(a - b) / (c.tol * (1 + Math.abs(b)));
        if (e > worst) worst = e;
        if (e > 1 && problems.length < 4) problems.push(`${name}[${i}] = ${a}, want ${b}`);
      }
    }
    const pass = problems.length === 0;
    return {
      name: c.name,
      pass,
      worst,
      message: pass ? `worst ${worst.toPrecision(2)}× tolerance` : problems.slice(0, 4).join('; '),
    };
  } catch (e) {
    return { name: c.name, pass: false, worst: Number.NaN, message: (e as Error).message };
  }
}

/** `run.mjs --programs`: every device-size case vs cpu; a table, `$OUT/cuda-programs.json`, exit 1 on a failure. */
export async function runProgramChecks(
  cuda: CudaBackend,
  outDir: string | null,
  started: number,
): Promise<number> {
  const cpu = await createCpuBackend();
  const results: ProgramCheck[] = [];
  for (const c of programCases('device')) {
    const t = performance.now();
    const r = await checkProgram(cuda, cpu, c);
    results.push(r);
    console.log(
      `[cuda-bench] ${r.pass ? 'pass' : 'FAIL'} ${c.name}: ${r.message} (${((performance.now() - t) / 1e3).toFixed(1)} s)`,
    );
  }
  await cpu.dispose();
  await cuda.dispose();
  const failed = results.filter((r) => !r.pass).length;
  if (outDir) {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(
      join(outDir, 'cuda-programs.json'),
      JSON.stringify({ device: cuda.device, results }, null, 2),
    );
  }
  console.log(
    `\n## @tessera/cuda programs on ${cuda.device}: ${results.length - failed}/${results.length} pass (${((performance.now() - started) / 1e3).toFixed(1)} s)\n`,
  );
  console.log('| case | status | worst error / tolerance | notes |');
  console.log('|---|---|---|---|');
  for (const r of results)
    console.log(
      `| ${r.name} | ${r.pass ? 'pass' : 'FAIL'} | ${Number.isFinite(r.worst) ? r.worst.toPrecision(2) : '–'} | ${r.pass ? '' : r.message} |`,
    );
  return failed > 0 ? 1 : 0;
}
