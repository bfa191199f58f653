// Program ops on WebGPU against the CPU backend's reference program ops (f64 sums), on seeded
// random inputs: every op alone, selections block for block, and a whole program.

import {
  type AttentionSpec,
  type CompressedStep,
  defineAttention,
  defineProgram,
  type KernelConfig,
  type Program,
  type ProgramBackend,
  type ProgramConfig,
  type ProgramOps,
  ResourceLimitError,
  runProgram,
  type Shape,
  type StepEnv,
  UnsupportedError,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { causal, slidingWindow } from '@tessera/patterns';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DEFAULT_LIMITS } from '../src/emit.js';
import { createWebGpuBackend, type GpuValue, type WebGpuBackend } from '../src/index.js';
import { selectionTile } from '../src/program/attend.js';
import { randomArray } from './reference.js';

// Software Vulkan compiles each new pipeline on first use; under a loaded 2-core CI that can take long.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

let gpu: WebGpuBackend;
let cpu: ProgramBackend & { dispose(): Promise<void> };
beforeAll(async () => {
  gpu = await createWebGpuBackend();
  cpu = await createCpuBackend();
});
afterAll(async () => {
  await gpu?.dispose();
  await cpu?.dispose();
});

const B = 2;
const H = 4;
const HK = 2;
const N = 45; // ragged against every block size below
const D = 8;
const shapes = {
  q: [B, H, N, D],
  k: [B, HK, N, D],
  v: [B, HK, N, D],
} as const satisfies Record<string, Shape>;

const causalSpec = defineAttention({
  batch: B,
  headsQ: H,
  headsKV: HK,
  seqQ: N,
  headDim: D,
  mask: causal(),
});
const fullSpec = defineAttention({ batch: B, headsQ: H, headsKV: HK, seqQ: N, headDim: D });

let seed = 100;
const rand = (shape: readonly number[], amp = 1): Float32Array => {
  const x = randomArray(
    shape.reduce((a, b) => a * b, 1),
    seed++,
  );
  if (amp !== 1) for (let i = 0; i < x.length; i++) x[i] = (x[i] as number) * amp;
  return x;
};

/** Worst |got − want| / (1 + |want|); equal infinities count as equal, unequal as Infinity. */
function worstError(got: Float32Array, want: Float32Array): number {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const a = got[i] as number;
    const b = want[i] as number;
    if (a === b) continue;
    if (!Number.isFinite(a) || !Number.isFinite(b)) return Number.POSITIVE_INFINITY;
    worst = Math.max(worst, Math.abs(a - b) / (1 + Math.abs(b)));
  }
  return worst;
}

const TOL = 2e-4;

/** Runs `config` on both backends and checks every output against the CPU's. */
async function agree(
  config: ProgramConfig,
  inputs: Record<string, Float32Array>,
): Promise<Record<string, Float32Array>> {
  const program = defineProgram(config);
  const want = await runProgram(cpu, program, inputs);
  const got = await runProgram(gpu, program, inputs);
  for (const name of program.outputs) {
    const w = want.outputs[name] as Float32Array;
    const g = got.outputs[name] as Float32Array;
    expect(worstError(g, w), `output '${name}'`).toBeLessThan(TOL);
  }
  return got.outputs as Record<string, Float32Array>;
}

describe('program ops, each against the CPU reference', () => {
  it('pool: mean and softmax-weighted, ragged last block, GQA k', async () => {
    await agree(
      {
        inputs: { q: shapes.q, k: shapes.k, w: [1, HK, 1, 8] },
        steps: [
          { op: 'pool', out: 'qm', x: 'q', block: 16 },
          { op: 'pool', out: 'km', x: 'k', block: 8 },
          { op: 'pool', out: 'kw', x: 'k', block: 8, weights: 'w' },
        ],
        outputs: ['qm', 'km', 'kw'],
      },
      { q: rand(shapes.q), k: rand(shapes.k), w: rand([HK, 8], 3) },
    );
  });

  it('project: low-rank sequence projection', async () => {
    await agree(
      {
        inputs: { k: shapes.k, e: [1, 1, 7, N] },
        steps: [{ op: 'project', out: 'kp', x: 'k', matrix: 'e' }],
        outputs: ['kp'],
      },
      { k: rand(shapes.k), e: rand([7, N], 0.3) },
    );
  });

  it('dense: per-head weights, with bias and relu, and without either', async () => {
    await agree(
      {
        inputs: { x: shapes.q, w: [1, H, D, 5], b: [1, H, 1, 5] },
        steps: [
          { op: 'dense', out: 'relu', x: 'x', weight: 'w', bias: 'b', activation: 'relu' },
          { op: 'dense', out: 'plain', x: 'x', weight: 'w' },
        ],
        outputs: ['relu', 'plain'],
      },
      { x: rand(shapes.q), w: rand([H, D, 5]), b: rand([H, 5]) },
    );
  });

  it('gate: sigmoid gates from x over three branches', async () => {
    const out = [B, H, N, 6] as const;
    await agree(
      {
        inputs: { x: shapes.q, w: [1, 3, H, D], b: [1, 1, 3, H], o0: out, o1: out, o2: out },
        steps: [
          { op: 'gate', out: 'g', x: 'x', weight: 'w', bias: 'b', branches: ['o0', 'o1', 'o2'] },
        ],
        outputs: ['g'],
      },
      {
        x: rand(shapes.q),
        w: rand([3, H, D], 2),
        b: rand([3, H], 4),
        o0: rand(out),
        o1: rand(out),
        o2: rand(out),
      },
    );
  });

  it('merge: exact log-sum-exp, rows empty in one branch and in every branch', async () => {
    // Causal compressed attention: queries of the first block see no summary (lse -inf); with
    // block 8 against 16 one branch is empty where the other is not.
    const got = await agree(
      {
        inputs: {
          q: shapes.q,
          k: [B, HK, 6, D],
          v: [B, HK, 6, D],
          k2: [B, HK, 3, D],
          v2: [B, HK, 3, D],
        },
        steps: [
          {
            op: 'compressed',
            out: 'a',
            lse: 'la',
            q: 'q',
            k: 'k',
            v: 'v',
            block: 8,
            seqKV: N,
            causal: true,
            scale: 0.35,
          },
          {
            op: 'compressed',
            out: 'c',
            lse: 'lc',
            q: 'q',
            k: 'k2',
            v: 'v2',
            block: 16,
            seqKV: N,
            causal: true,
            scale: 0.35,
          },
          {
            op: 'merge',
            out: 'm',
            lse: 'lm',
            branches: [
              { out: 'a', lse: 'la' },
              { out: 'c', lse: 'lc' },
            ],
          },
        ],
        outputs: ['m', 'lm', 'lc'],
      },
      {
        q: rand(shapes.q),
        k: rand([B, HK, 6, D]),
        v: rand([B, HK, 6, D]),
        k2: rand([B, HK, 3, D]),
        v2: rand([B, HK, 3, D]),
      },
    );
    const lm = got.lm as Float32Array;
    const lc = got.lc as Float32Array;
    expect(lm[0]).toBe(Number.NEGATIVE_INFINITY); // query 0: empty in both branches
    expect(lc[10]).toBe(Number.NEGATIVE_INFINITY); // query 10: empty in branch c only
    expect(Number.isFinite(lm[10] as number)).toBe(true);
    expect((got.m as Float32Array).subarray(0, D).every((x) => x === 0)).toBe(true);
  });

  const attendCases: [string, AttentionSpec][] = [
    ['causal', causalSpec],
    ['non-causal', fullSpec],
    [
      'linear kernel (elu+1), causal',
      defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        kernel: { type: 'linear', featureMap: 'elu+1' },
        mask: causal(),
      }),
    ],
  ];
  for (const [name, spec] of attendCases) {
    it(`attend without a selection: ${name}, GQA, ragged`, async () => {
      await agree(
        {
          inputs: shapes,
          steps: [{ op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v' }],
          outputs: ['o', 'l'],
        },
        { q: rand(shapes.q), k: rand(shapes.k), v: rand(shapes.v) },
      );
    });
  }

  for (const isCausal of [true, false]) {
    it(`compressed without a selection, ${isCausal ? 'causal' : 'non-causal'}`, async () => {
      await agree(
        {
          inputs: { q: shapes.q, k: shapes.k, v: shapes.v },
          steps: [
            { op: 'pool', out: 'kp', x: 'k', block: 8 },
            { op: 'pool', out: 'vp', x: 'v', block: 8 },
            {
              op: 'compressed',
              out: 'o',
              lse: 'l',
              q: 'q',
              k: 'kp',
              v: 'vp',
              block: 8,
              seqKV: N,
              causal: isCausal,
              scale: 0.5,
            },
          ],
          outputs: ['o', 'l'],
        },
        { q: rand(shapes.q, 2), k: rand(shapes.k, 2), v: rand(shapes.v) },
      );
    });
  }
});

/** Steps that pool q and k into block summaries and select blocks of `spec` from them. */
function selectSteps(
  spec: AttentionSpec,
  blockQ: number,
  blockKV: number,
  topK: number,
  local: number,
) {
  return [
    { op: 'pool', out: 'qp', x: 'q', block: blockQ },
    { op: 'pool', out: 'kp', x: 'k', block: blockKV },
    { op: 'select', out: 'sel', q: 'qp', k: 'kp', spec, blockQ, blockKV, topK, local },
  ] as const;
}

/** Runs a program's steps one by one on `ops`, keeping every value (to inspect selections). */
async function runSteps<T>(
  ops: ProgramOps<T>,
  program: Program,
  inputs: Record<string, Float32Array>,
): Promise<Map<string, T>> {
  const values = new Map<string, T>();
  for (const [name, shape] of Object.entries(program.inputs))
    values.set(name, await ops.upload(inputs[name] as Float32Array, shape));
  const env: StepEnv<T> = {
    get: (name) => values.get(name) as T,
    shape: (name) => program.shapes[name] as Shape,
  };
  for (const step of program.steps) {
    for (const [name, v] of Object.entries(await ops.step(step, env))) values.set(name, v);
  }
  return values;
}

describe('select', () => {
  const window = defineAttention({
    batch: B,
    headsQ: H,
    headsKV: HK,
    seqQ: N,
    headDim: D,
    mask: slidingWindow(20, { causal: true }),
  });
  const cases: [string, AttentionSpec, number, number, number, number][] = [
    ['causal, blockQ 16 / blockKV 8, top 4 with 1 local', causalSpec, 16, 8, 4, 1],
    ['non-causal, 8 / 8, top 3, no local', fullSpec, 8, 8, 3, 0],
    ['sliding window, 8 / 4, top 5 with 2 local', window, 8, 4, 5, 2],
    ['causal, 4 / 16, top 2 with 1 local', causalSpec, 4, 16, 2, 1],
  ];
  for (const [name, spec, bq, bk, topK, local] of cases) {
    it(`GPU-chosen blocks equal the CPU's: ${name}`, async () => {
      const program = defineProgram({
        inputs: shapes,
        steps: [
          ...selectSteps(spec, bq, bk, topK, local),
          { op: 'attend', out: 'o', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
        ],
        outputs: ['o'],
      });
      const prefix = { ...program, steps: program.steps.slice(0, 3) };
      const inputs = { q: rand(shapes.q), k: rand(shapes.k), v: rand(shapes.v) };
      const g = await runSteps(gpu.program, prefix, inputs);
      const c = await runSteps(cpu.program as ProgramOps<unknown>, prefix, inputs);
      const got = await gpu.program.readSelection(g.get('sel') as GpuValue);
      const want = (c.get('sel') as { layout: { rowStart: Int32Array; kvBlocks: Int32Array } })
        .layout;
      expect(Array.from(got.rowStart)).toEqual(Array.from(want.rowStart));
      expect(Array.from(got.kvBlocks)).toEqual(Array.from(want.kvBlocks));
      expect(got.full.every((f) => f === 0)).toBe(true); // every selected block is partial
      expect(got.kvBlocks.length).toBeGreaterThan(0);
      for (const v of g.values()) gpu.program.free(v);
    });
  }

  it('attend on a selection matches the CPU (causal, GQA, ragged)', async () => {
    await agree(
      {
        inputs: shapes,
        steps: [
          ...selectSteps(causalSpec, 16, 8, 3, 1),
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec: causalSpec,
            q: 'q',
            k: 'k',
            v: 'v',
            selection: 'sel',
          },
        ],
        outputs: ['o', 'l'],
      },
      { q: rand(shapes.q), k: rand(shapes.k), v: rand(shapes.v) },
    );
  });

  it('attend on a selection matches the CPU (non-causal, blocks 8 / 16)', async () => {
    await agree(
      {
        inputs: shapes,
        steps: [
          ...selectSteps(fullSpec, 8, 16, 2, 0),
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec: fullSpec,
            q: 'q',
            k: 'k',
            v: 'v',
            selection: 'sel',
          },
        ],
        outputs: ['o', 'l'],
      },
      { q: rand(shapes.q), k: rand(shapes.k), v: rand(shapes.v) },
    );
  });

  it('attend on a selection whose blocks do not fit one tile: blocks split into sub-blocks', async () => {
    // 600 bytes of workgroup memory: a 16-key tile of K and V (1024 bytes) does not fit, 8 keys
    // with the queries in registers (512 bytes) do, so each selected block becomes two.
    const small = await createWebGpuBackend({ limits: { maxComputeWorkgroupStorageSize: 600 } });
    try {
      const tile = selectionTile(causalSpec, 16, 16, small.capabilities.limits);
      expect(tile).toMatchObject({ blockQ: 16, blockKV: 8, qStage: 'private' });
      const program = defineProgram({
        inputs: shapes,
        steps: [
          ...selectSteps(causalSpec, 16, 16, 2, 1),
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec: causalSpec,
            q: 'q',
            k: 'k',
            v: 'v',
            selection: 'sel',
          },
        ],
        outputs: ['o', 'l'],
      });
      const inputs = { q: rand(shapes.q), k: rand(shapes.k), v: rand(shapes.v) };
      const want = await runProgram(cpu, program, inputs);
      const got = await runProgram(small, program, inputs);
      for (const name of ['o', 'l'])
        expect(
          worstError(got.outputs[name] as Float32Array, want.outputs[name] as Float32Array),
        ).toBeLessThan(TOL);
    } finally {
      await small.dispose();
    }
  });

  it('the tile for a selection: the largest KV tile dividing blockKV that fits', () => {
    const d64 = defineAttention({ batch: 1, headsQ: 8, seqQ: 4096, headDim: 64, mask: causal() });
    // 64×64 blocks, headDim 64, 16 KiB: K+V tiles of 64 keys need 32 KiB; 32 keys with the
    // queries in registers need exactly 16 KiB.
    expect(selectionTile(d64, 64, 64, DEFAULT_LIMITS)).toMatchObject({
      blockQ: 64,
      blockKV: 32,
      qStage: 'private',
      rowsPerThread: 1,
    });
    expect(selectionTile(d64, 16, 16, DEFAULT_LIMITS)).toMatchObject({
      blockKV: 16,
      qStage: 'shared',
    });
    expect(() =>
      selectionTile(d64, 16, 16, { ...DEFAULT_LIMITS, maxComputeWorkgroupStorageSize: 256 }),
    ).toThrow(ResourceLimitError);
  });

  for (const mode of ['exclude', 'only'] as const) {
    for (const isCausal of [true, false]) {
      it(`compressed with selectionMode '${mode}', ${isCausal ? 'causal' : 'non-causal'}`, async () => {
        const spec = isCausal ? causalSpec : fullSpec;
        await agree(
          {
            inputs: shapes,
            steps: [
              ...selectSteps(spec, 16, 8, 3, isCausal ? 1 : 0),
              { op: 'pool', out: 'vp', x: 'v', block: 8 },
              {
                op: 'compressed',
                out: 'o',
                lse: 'l',
                q: 'q',
                k: 'kp',
                v: 'vp',
                block: 8,
                seqKV: N,
                causal: isCausal,
                scale: 0.5,
                selection: 'sel',
                selectionMode: mode,
              },
            ],
            outputs: ['o', 'l'],
          },
          { q: rand(shapes.q, 2), k: rand(shapes.k, 2), v: rand(shapes.v) },
        );
      });
    }
  }
});

describe('compressed with a feature map, and skipOwnBlock', () => {
  type Kernel = NonNullable<CompressedStep['kernel']>;
  const compressedStep = (
    block: number,
    isCausal: boolean,
    kernel: Kernel | undefined,
    extra: Partial<CompressedStep> = {},
  ): CompressedStep => ({
    op: 'compressed',
    out: 'o',
    lse: 'l',
    q: 'q',
    k: 'kp',
    v: 'vp',
    block,
    seqKV: N,
    causal: isCausal,
    scale: 0.5,
    ...(kernel ? { kernel } : {}),
    ...extra,
  });
  const pooled = (block: number, step: CompressedStep): ProgramConfig => ({
    inputs: shapes,
    steps: [
      { op: 'pool', out: 'kp', x: 'k', block },
      { op: 'pool', out: 'vp', x: 'v', block },
      step,
    ],
    outputs: ['o', 'l'],
  });
  const inputs = () => ({ q: rand(shapes.q, 2), k: rand(shapes.k, 2), v: rand(shapes.v) });

  // [name, kernel, block]: blocks 8 and 16 are both ragged against N = 45 (last blocks 5 and 13).
  const kernels: [string, Kernel | undefined, number][] = [
    ['softmax', undefined, 8],
    ['favor+ with 32 features', { featureMap: 'favor+', features: 32, seed: 7 }, 8],
    ['favor+ with 64 features', { featureMap: 'favor+', features: 64, seed: 3 }, 16],
    ['elu+1', { featureMap: 'elu+1' }, 8],
    ['relu', { featureMap: 'relu' }, 16],
  ];
  kernels.forEach(([name, kernel, block], index) => {
    // skipOwnBlock changes nothing when causal (the own block is never seen); half the cases set it.
    const skip = index % 2 === 1;
    if (kernel) {
      it(`${name}, causal${skip ? ' with skipOwnBlock' : ''}, GQA, ragged blocks of ${block}`, async () => {
        const step = compressedStep(block, true, kernel, { skipOwnBlock: skip });
        const out = await agree(pooled(block, step), inputs());
        // The first block's queries see no summary: out 0, lse -Infinity.
        expect(out.l?.[0]).toBe(Number.NEGATIVE_INFINITY);
        expect(
          Array.from(out.l ?? [])
            .slice(block, N)
            .some(Number.isFinite),
        ).toBe(true);
      });
    }
    it(`${name}, bidirectional with skipOwnBlock, GQA, ragged blocks of ${block}`, async () => {
      const step = compressedStep(block, false, kernel, { skipOwnBlock: true });
      const x = inputs();
      const got = await agree(pooled(block, step), x);
      // Skipping the own block changes the result (the test would notice it being ignored).
      const plain = await runProgram(
        gpu,
        defineProgram(pooled(block, { ...step, skipOwnBlock: false })),
        x,
      );
      expect(worstError(plain.outputs.o as Float32Array, got.o as Float32Array)).toBeGreaterThan(
        1e-3,
      );
    });
  });

  it('favor+ default features (256) and seed, with a selection excluded, causal', async () => {
    await agree(
      {
        inputs: shapes,
        steps: [
          ...selectSteps(causalSpec, 16, 8, 3, 1),
          { op: 'pool', out: 'vp', x: 'v', block: 8 },
          compressedStep(
            8,
            true,
            { featureMap: 'favor+' },
            { selection: 'sel', selectionMode: 'exclude' },
          ),
        ],
        outputs: ['o', 'l'],
      },
      inputs(),
    );
  });

  it('relu rows with no mass (queries ≤ 0) give out 0 and lse -Infinity', async () => {
    const x = inputs();
    // Every 5th query row of every (batch, head) non-positive: relu features all zero.
    for (let r = 0; r < B * H * N; r += 5)
      for (let d = 0; d < D; d++) x.q[r * D + d] = -Math.abs(x.q[r * D + d] as number);
    const out = await agree(
      pooled(8, compressedStep(8, false, { featureMap: 'relu' }, { skipOwnBlock: true })),
      x,
    );
    for (let r = 0; r < B * H * N; r++) {
      if (r % 5 === 0) {
        expect(out.l?.[r]).toBe(Number.NEGATIVE_INFINITY);
        for (let d = 0; d < D; d++) expect(out.o?.[r * D + d]).toBe(0);
      }
    }
    // Other rows still see summaries (relu rows may have none by chance; the CPU agrees on which).
    expect(Array.from(out.l ?? []).filter(Number.isFinite).length).toBeGreaterThan((B * H * N) / 2);
  });

  it('a feature map the backend does not have is refused with UnsupportedError', async () => {
    const kp = await gpu.program.upload(rand([B, HK, 6, D]), [B, HK, 6, D]);
    const q = await gpu.program.upload(rand(shapes.q), shapes.q);
    const values: Record<string, GpuValue> = { q, kp, vp: kp };
    const env: StepEnv<GpuValue> = {
      get: (name) => values[name] as GpuValue,
      shape: (name) => (name === 'q' ? shapes.q : [B, H, N, D]),
    };
    const step = compressedStep(8, true, { featureMap: 'trig-rf' as 'relu' });
    await expect(gpu.program.step(step, env)).rejects.toThrow(/'trig-rf'/);
    await expect(gpu.program.step(step, env)).rejects.toThrow(UnsupportedError);
    gpu.program.free(q);
    gpu.program.free(kp);
  });
});

describe('a whole program', () => {
  it('pool k/v → select → attend on the selection + compressed excluding it → merge', async () => {
    const config: ProgramConfig = {
      inputs: shapes,
      steps: [
        { op: 'pool', out: 'qp', x: 'q', block: 16 },
        { op: 'pool', out: 'kp', x: 'k', block: 8 },
        { op: 'pool', out: 'vp', x: 'v', block: 8 },
        {
          op: 'select',
          out: 'sel',
          q: 'qp',
          k: 'kp',
          spec: causalSpec,
          blockQ: 16,
          blockKV: 8,
          topK: 4,
          local: 1,
        },
        {
          op: 'attend',
          out: 'a',
          lse: 'la',
          spec: causalSpec,
          q: 'q',
          k: 'k',
          v: 'v',
          selection: 'sel',
        },
        {
          op: 'compressed',
          out: 'c',
          lse: 'lc',
          q: 'q',
          k: 'kp',
          v: 'vp',
          block: 8,
          seqKV: N,
          causal: true,
          scale: causalSpec.scale,
          selection: 'sel',
          selectionMode: 'exclude',
        },
        {
          op: 'merge',
          out: 'out',
          lse: 'lse',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 'c', lse: 'lc' },
          ],
        },
      ],
      outputs: ['out', 'lse'],
    };
    const inputs = { q: rand(shapes.q, 2), k: rand(shapes.k, 2), v: rand(shapes.v) };
    await agree(config, inputs);
    const res = await runProgram(gpu, defineProgram(config), inputs);
    expect(res.peakBytes).toBeGreaterThan(0);
  });
});

describe('group, grouped attend and subtract', () => {
  /** Steps grouping q (and k, unless `shared`) with centroids cq / ck into groups of `size`. */
  const groupSteps = (size: number, shared: boolean) =>
    [
      { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size },
      ...(shared ? [] : [{ op: 'group', out: 'gk', x: 'k', centroids: 'ck', size } as const]),
    ] as const;
  const groupedOf = (shared: boolean) => ({ groupQ: 'gq', groupKV: shared ? 'gq' : 'gk' });

  /** Rows with lse −∞ have out 0; nothing is NaN. Returns the number of empty rows. */
  function checkEmptyRows(out: Float32Array, lse: Float32Array, cols: number): number {
    let empty = 0;
    lse.forEach((l, r) => {
      expect(Number.isNaN(l)).toBe(false);
      if (l === Number.NEGATIVE_INFINITY) {
        empty++;
        for (let d = 0; d < cols; d++) expect(out[r * cols + d]).toBe(0);
      }
    });
    expect(out.some(Number.isNaN)).toBe(false);
    return empty;
  }

  /** The grouping values of the first `steps` steps on both backends, compared. */
  async function compareGroupings(
    config: ProgramConfig,
    steps: number,
    inputs: Record<string, Float32Array>,
    names: string[],
  ): Promise<void> {
    const program = defineProgram(config);
    const prefix = { ...program, steps: program.steps.slice(0, steps) };
    const g = await runSteps(gpu.program, prefix, inputs);
    const c = await runSteps(cpu.program as ProgramOps<unknown>, prefix, inputs);
    for (const name of names) {
      const got = await gpu.program.readGrouping(g.get(name) as GpuValue);
      const want = (c.get(name) as { grouping: { rank: Int32Array; order: Int32Array } }).grouping;
      expect(Array.from(got.rank), `${name} rank`).toEqual(Array.from(want.rank));
      expect(Array.from(got.order), `${name} order`).toEqual(Array.from(want.order));
    }
    for (const v of g.values()) gpu.program.free(v);
  }

  // [name, causal, GQA, size, clusters, one grouping shared by q and k]
  const cases: [string, boolean, boolean, number, number, boolean][] = [
    ['causal, GQA, groups of 8 (45 rows: ragged)', true, true, 8, 4, false],
    ['non-causal, GQA, groups of 16, 12 clusters (some empty)', false, true, 16, 12, false],
    ['causal, MHA, groups of 1, one grouping for q and k', true, false, 1, 5, true],
    ['non-causal, MHA, one group of all 45 rows', false, false, N, 3, false],
  ];
  for (const [name, isCausal, gqa, size, C, shared] of cases) {
    it(`softmax: ${name}`, async () => {
      const heads = gqa ? HK : H;
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: heads,
        seqQ: N,
        headDim: D,
        ...(isCausal ? { mask: causal() } : {}),
      });
      const kv = [B, heads, N, D] as const;
      const config: ProgramConfig = {
        inputs: { q: shapes.q, k: kv, v: kv, cq: [1, H, C, D], ck: [1, heads, C, D] },
        steps: [
          ...groupSteps(size, shared),
          { op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v', ...groupedOf(shared) },
        ],
        outputs: ['o', 'l'],
      };
      const cq = rand([H, C, D]);
      const ck = rand([heads, C, D]);
      // The last centroid repeats the first: ties go to the lower cluster, so it stays empty.
      for (let h = 0; h < H; h++) cq.copyWithin((h * C + C - 1) * D, h * C * D, h * C * D + D);
      for (let h = 0; h < heads; h++) ck.copyWithin((h * C + C - 1) * D, h * C * D, h * C * D + D);
      const inputs = { q: rand(shapes.q, 2), k: rand(kv, 2), v: rand(kv), cq, ck };
      const got = await agree(config, inputs);
      const empty = checkEmptyRows(got.o as Float32Array, got.l as Float32Array, D);
      if (!isCausal || shared) expect(empty).toBe(0); // every query sees a key (itself, if shared)
      await compareGroupings(config, shared ? 1 : 2, inputs, shared ? ['gq'] : ['gq', 'gk']);
      if (size === N) {
        // One group of every row: plain attention.
        const plain = await runProgram(
          gpu,
          defineProgram({
            ...config,
            steps: [{ op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v' }],
          }),
          inputs,
        );
        expect(worstError(got.o as Float32Array, plain.outputs.o as Float32Array)).toBeLessThan(
          TOL,
        );
      }
    });
  }

  // One `group` step on the keys passed as groupQ and groupKV (token grouping): query head h reads
  // the grouping of its KV head h / (H / HK). Ragged (45 rows, groups of 6), GQA 4 / 2.
  const keyGroupingCases: [string, KernelConfig, boolean, number][] = [
    ['softmax, causal', { type: 'softmax' }, true, TOL],
    ['softmax, non-causal', { type: 'softmax' }, false, TOL],
    ['elu+1, causal', { type: 'linear', featureMap: 'elu+1' }, true, TOL],
  ];
  for (const [name, kernel, isCausal, tol] of keyGroupingCases) {
    it(`one grouping of the keys serves queries too: ${name}, GQA, ragged groups of 6`, async () => {
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        kernel,
        ...(isCausal ? { mask: causal() } : {}),
      });
      const C = 5;
      const config: ProgramConfig = {
        inputs: { ...shapes, ck: [1, HK, C, D] },
        steps: [
          { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: 6 },
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec,
            q: 'q',
            k: 'k',
            v: 'v',
            groupQ: 'gk',
            groupKV: 'gk',
          },
        ],
        outputs: ['o', 'l'],
      };
      const program = defineProgram(config);
      const inputs = {
        q: rand(shapes.q, 2),
        k: rand(shapes.k, 2),
        v: rand(shapes.v),
        ck: rand([HK, C, D]),
      };
      const want = await runProgram(cpu, program, inputs);
      const got = await runProgram(gpu, program, inputs);
      for (const o of ['o', 'l'])
        expect(
          worstError(got.outputs[o] as Float32Array, want.outputs[o] as Float32Array),
          o,
        ).toBeLessThan(tol);
      const o = got.outputs.o as Float32Array;
      const l = got.outputs.l as Float32Array;
      // Every token's own key is in its group: no row is empty, causal or not.
      expect(checkEmptyRows(o, l, D)).toBe(0);
      // The grouping itself, rank and order, as the CPU's.
      await compareGroupings(config, 1, inputs, ['gk']);
    });
  }

  it('the counting sort over several tiles of rows: 150 rows, 7 clusters', async () => {
    const x = [1, 2, 150, 4] as const;
    await compareGroupings(
      {
        inputs: { q: x, cq: [1, 2, 7, 4] },
        steps: [{ op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 10 }],
        outputs: ['q'],
      },
      1,
      { q: rand(x), cq: rand([2, 7, 4]) },
      ['gq'],
    );
  });

  /** favor+ estimates: f32 features and exp of the stabilisers; 1e-3 relative. */
  const FAVOR_TOL = 1e-3;
  const linearCases: [string, KernelConfig, boolean, number][] = [
    [
      'favor+ with 64 features, causal',
      { type: 'linear', featureMap: 'favor+', features: 64, seed: 5 },
      true,
      FAVOR_TOL,
    ],
    ['elu+1, non-causal', { type: 'linear', featureMap: 'elu+1' }, false, TOL],
    ['relu, causal', { type: 'linear', featureMap: 'relu' }, true, TOL],
    // Signed features: the weights of a group stay well away from a zero sum at these inputs.
    [
      'trig-rf with 64 features, non-causal',
      { type: 'linear', featureMap: 'trig-rf', features: 64, seed: 2 },
      false,
      FAVOR_TOL,
    ],
  ];
  for (const [name, kernel, isCausal, tol] of linearCases) {
    it(`linear: ${name}, GQA, groups of 8`, async () => {
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        kernel,
        ...(isCausal ? { mask: causal() } : {}),
      });
      const program = defineProgram({
        inputs: { ...shapes, cq: [1, H, 4, D], ck: [1, HK, 4, D] },
        steps: [
          ...groupSteps(8, false),
          { op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v', ...groupedOf(false) },
        ],
        outputs: ['o', 'l'],
      });
      const inputs = {
        q: rand(shapes.q),
        k: rand(shapes.k),
        v: rand(shapes.v),
        cq: rand([H, 4, D]),
        ck: rand([HK, 4, D]),
      };
      const want = await runProgram(cpu, program, inputs);
      const got = await runProgram(gpu, program, inputs);
      for (const o of ['o', 'l'])
        expect(
          worstError(got.outputs[o] as Float32Array, want.outputs[o] as Float32Array),
          o,
        ).toBeLessThan(tol);
      const empty = checkEmptyRows(got.outputs.o as Float32Array, got.outputs.l as Float32Array, D);
      expect(empty).toBeLessThan(B * H * N);
    });
  }

  it('subtract: a normal part, an empty part, a part equal to the whole, an empty whole', async () => {
    const rows = B * H * N;
    const ow = rand(shapes.q);
    const op = rand(shapes.q);
    const lw = rand([rows], 3);
    const lp = new Float32Array(rows);
    const u = rand([rows]);
    for (let r = 0; r < rows; r++) {
      const kind = r % 4;
      if (kind === 0) lp[r] = (lw[r] as number) - 0.05 - Math.abs(u[r] as number) * 3;
      else if (kind === 1)
        lp[r] = Number.NEGATIVE_INFINITY; // empty part
      else if (kind === 2)
        lp[r] = lw[r] as number; // part = whole: nothing left
      else {
        lw[r] = Number.NEGATIVE_INFINITY; // empty whole (and part)
        lp[r] = Number.NEGATIVE_INFINITY;
      }
    }
    const rowShape = [B, H, N, 1] as const;
    // runProgram refuses non-finite inputs; the ops take the −∞ lses an empty branch would give.
    const program = defineProgram({
      inputs: { ow: shapes.q, lw: rowShape, op: shapes.q, lp: rowShape },
      steps: [
        {
          op: 'subtract',
          out: 'o',
          lse: 'l',
          whole: { out: 'ow', lse: 'lw' },
          part: { out: 'op', lse: 'lp' },
        },
      ],
      outputs: ['o', 'l'],
    });
    const inputs = { ow, lw, op, lp };
    const g = await runSteps(gpu.program, program, inputs);
    const cpuOps = cpu.program as ProgramOps<unknown>;
    const c = await runSteps(cpuOps, program, inputs);
    const got: Record<string, Float32Array> = {};
    for (const name of ['o', 'l']) {
      got[name] = await gpu.program.download(g.get(name) as GpuValue);
      const want = await cpuOps.download(c.get(name));
      expect(worstError(got[name] as Float32Array, want), name).toBeLessThan(TOL);
    }
    for (const v of g.values()) gpu.program.free(v);
    const o = got.o as Float32Array;
    const l = got.l as Float32Array;
    checkEmptyRows(o, l, D);
    for (let r = 0; r < rows; r++) {
      const kind = r % 4;
      if (kind === 0) expect(l[r]).toBeLessThan(lw[r] as number);
      if (kind === 1) {
        expect(l[r]).toBe(lw[r]);
        expect(Array.from(o.subarray(r * D, (r + 1) * D))).toEqual(
          Array.from(ow.subarray(r * D, (r + 1) * D)),
        );
      }
      if (kind >= 2) expect(l[r]).toBe(Number.NEGATIVE_INFINITY);
    }
  });

  it('a whole program: exact grouped softmax + (kernel over all keys − kernel in the group), merged', async () => {
    const exact = causalSpec;
    const kernelSpec = defineAttention({
      batch: B,
      headsQ: H,
      headsKV: HK,
      seqQ: N,
      headDim: D,
      kernel: { type: 'linear', featureMap: 'favor+', features: 64, seed: 9 },
      mask: causal(),
    });
    const grouped = groupedOf(false);
    const config: ProgramConfig = {
      inputs: { ...shapes, cq: [1, H, 4, D], ck: [1, HK, 4, D] },
      steps: [
        ...groupSteps(8, false),
        { op: 'attend', out: 'a', lse: 'la', spec: exact, q: 'q', k: 'k', v: 'v', ...grouped },
        { op: 'attend', out: 'w', lse: 'lw', spec: kernelSpec, q: 'q', k: 'k', v: 'v' },
        { op: 'attend', out: 'p', lse: 'lp', spec: kernelSpec, q: 'q', k: 'k', v: 'v', ...grouped },
        {
          op: 'subtract',
          out: 's',
          lse: 'ls',
          whole: { out: 'w', lse: 'lw' },
          part: { out: 'p', lse: 'lp' },
        },
        {
          op: 'merge',
          out: 'out',
          lse: 'lse',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 's', lse: 'ls' },
          ],
        },
      ],
      outputs: ['out', 'lse'],
    };
    const inputs = {
      q: rand(shapes.q),
      k: rand(shapes.k),
      v: rand(shapes.v),
      cq: rand([H, 4, D]),
      ck: rand([HK, 4, D]),
    };
    const program = defineProgram(config);
    const want = await runProgram(cpu, program, inputs);
    const got = await runProgram(gpu, program, inputs);
    for (const o of ['out', 'lse'])
      expect(
        worstError(got.outputs[o] as Float32Array, want.outputs[o] as Float32Array),
        o,
      ).toBeLessThan(FAVOR_TOL);
    checkEmptyRows(got.outputs.out as Float32Array, got.outputs.lse as Float32Array, D);
  });

  it('a grouping stays on the device: download refused, bytes count its buffer', async () => {
    const program = defineProgram({
      inputs: { q: shapes.q, cq: [1, H, 3, D] },
      steps: [{ op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 8 }],
      outputs: ['q'],
    });
    const values = await runSteps(gpu.program, program, { q: rand(shapes.q), cq: rand([H, 3, D]) });
    const g = values.get('gq') as GpuValue;
    expect(g.kind).toBe('grouping');
    await expect(gpu.program.download(g)).rejects.toThrow(UnsupportedError);
    await expect(gpu.program.download(g)).rejects.toThrow(/grouping/);
    expect(gpu.program.bytes(g)).toBe(g.buffer.size);
    expect(g.buffer.size).toBeGreaterThanOrEqual(2 * B * H * N * 4); // rank and order
    for (const v of values.values()) gpu.program.free(v);
  });

  it("too many clusters for the sort kernel's workgroup memory: ResourceLimitError", async () => {
    const small = await createWebGpuBackend({ limits: { maxComputeWorkgroupStorageSize: 600 } });
    try {
      const program = defineProgram({
        inputs: { q: shapes.q, cq: [1, H, 100, D] },
        steps: [{ op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 8 }],
        outputs: ['q'],
      });
      const run = runSteps(small.program, program, { q: rand(shapes.q), cq: rand([H, 100, D]) });
      await expect(run).rejects.toThrow(ResourceLimitError);
    } finally {
      await small.dispose();
    }
  });
});

describe('values and errors', () => {
  it('bytes are the sizes of the buffers a value holds; kept values stay on the device', async () => {
    const program = defineProgram({
      inputs: { k: shapes.k },
      steps: [{ op: 'pool', out: 'kp', x: 'k', block: 8 }],
      outputs: ['kp'],
    });
    const k = rand(shapes.k);
    const res = await runProgram(gpu, program, { k }, { keep: ['kp'] });
    const kept = res.kept.kp;
    expect(kept).toBeDefined();
    const handle = kept?.handle as GpuValue;
    expect(gpu.program.bytes(handle)).toBe(handle.buffer.size);
    expect(handle.buffer.size).toBeGreaterThanOrEqual(B * HK * 6 * D * 4);
    expect(Array.from(await gpu.program.download(handle))).toEqual(
      Array.from(res.outputs.kp ?? []),
    );
    kept?.release();
  });

  it('steps never map a buffer: nothing comes back to the host between steps', async () => {
    const linearSpec = defineAttention({
      batch: B,
      headsQ: H,
      headsKV: HK,
      seqQ: N,
      headDim: D,
      kernel: { type: 'linear', featureMap: 'favor+', features: 16, seed: 1 },
      mask: causal(),
    });
    const program = defineProgram({
      inputs: { ...shapes, cq: [1, H, 4, D], ck: [1, HK, 4, D] },
      steps: [
        { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 8 },
        { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: 8 },
        ...selectSteps(causalSpec, 16, 8, 3, 1),
        { op: 'pool', out: 'vp', x: 'v', block: 8 },
        {
          op: 'attend',
          out: 'a',
          lse: 'la',
          spec: causalSpec,
          q: 'q',
          k: 'k',
          v: 'v',
          selection: 'sel',
        },
        {
          op: 'compressed',
          out: 'c',
          lse: 'lc',
          q: 'q',
          k: 'kp',
          v: 'vp',
          block: 8,
          seqKV: N,
          causal: true,
          scale: 0.5,
        },
        {
          op: 'merge',
          out: 'm',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 'c', lse: 'lc' },
          ],
        },
        {
          op: 'attend',
          out: 'g',
          lse: 'lg',
          spec: linearSpec,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'gq',
          groupKV: 'gk',
        },
        { op: 'attend', out: 'w', lse: 'lw', spec: linearSpec, q: 'q', k: 'k', v: 'v' },
        {
          op: 'subtract',
          out: 's',
          whole: { out: 'w', lse: 'lw' },
          part: { out: 'g', lse: 'lg' },
        },
      ],
      outputs: ['m', 's'],
    });
    const probe = gpu.gpuDevice.createBuffer({ size: 16, usage: 1 | 8 }); // MAP_READ | COPY_DST
    const proto = Object.getPrototypeOf(probe) as { mapAsync: (...a: unknown[]) => Promise<void> };
    probe.destroy();
    const original = proto.mapAsync;
    let maps = 0;
    proto.mapAsync = function (this: unknown, ...a: unknown[]) {
      maps++;
      return original.apply(this, a);
    };
    let values: Map<string, GpuValue>;
    try {
      values = await runSteps(gpu.program, program, {
        q: rand(shapes.q),
        k: rand(shapes.k),
        v: rand(shapes.v),
        cq: rand([H, 4, D]),
        ck: rand([HK, 4, D]),
      });
      expect(maps).toBe(0);
      await gpu.program.download(values.get('m') as GpuValue);
      expect(maps).toBe(1); // the probe sees a real download
    } finally {
      proto.mapAsync = original;
    }
    for (const v of values.values()) gpu.program.free(v);
  });

  for (const dtype of ['f16', 'bf16'] as const) {
    it(`attend on a ${dtype} spec rounds q, k, v as the CPU does (with and without a selection)`, async () => {
      const spec = defineAttention({
        batch: B,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        headDim: D,
        dtype,
        mask: causal(),
      });
      await agree(
        {
          inputs: shapes,
          steps: [
            ...selectSteps(spec, 16, 8, 3, 1),
            { op: 'attend', out: 'o', lse: 'l', spec, q: 'q', k: 'k', v: 'v' },
            { op: 'attend', out: 'os', lse: 'ls', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
          ],
          outputs: ['o', 'l', 'os', 'ls'],
        },
        { q: rand(shapes.q, 2), k: rand(shapes.k, 2), v: rand(shapes.v) },
      );
    });
  }

  it('a selection cannot be downloaded', async () => {
    const program = defineProgram({
      inputs: shapes,
      steps: [
        ...selectSteps(causalSpec, 16, 8, 3, 1),
        { op: 'attend', out: 'o', spec: causalSpec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
      ],
      outputs: ['o'],
    });
    const values = await runSteps(
      gpu.program,
      { ...program, steps: program.steps.slice(0, 3) },
      {
        q: rand(shapes.q),
        k: rand(shapes.k),
        v: rand(shapes.v),
      },
    );
    await expect(gpu.program.download(values.get('sel') as GpuValue)).rejects.toThrow(
      UnsupportedError,
    );
    for (const v of values.values()) gpu.program.free(v);
  });
});
