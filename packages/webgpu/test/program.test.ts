// What is WebGPU's own in running programs: selections split into tiles that fit the device's
// workgroup memory, resource limits, values that stay on the device (selections and groupings
// cannot be downloaded; bytes; steps never map a buffer) and typed refusals. Every step's results
// and the selections and groupings entry for entry are checked against the cpu by the program
// catalogue (test/program-conformance.test.ts).

import {
  type AttentionSpec,
  type CompressedStep,
  defineAttention,
  defineProgram,
  type Program,
  type ProgramBackend,
  type ProgramOps,
  ResourceLimitError,
  runProgram,
  type Shape,
  UnsupportedError,
} from '@tessera/core';
import type { StepEnv } from '@tessera/core/backend';
import { createCpuBackend } from '@tessera/cpu';
import { causal } from '@tessera/patterns';
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

describe('selections in tiles', () => {
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
});

describe('values, limits and errors', () => {
  it('a feature map the backend does not have is refused with UnsupportedError', async () => {
    const kp = await gpu.program.upload(rand([B, HK, 6, D]), [B, HK, 6, D]);
    const q = await gpu.program.upload(rand(shapes.q), shapes.q);
    const values: Record<string, GpuValue> = { q, kp, vp: kp };
    const env: StepEnv<GpuValue> = {
      get: (name) => values[name] as GpuValue,
      shape: (name) => (name === 'q' ? shapes.q : [B, H, N, D]),
    };
    const step: CompressedStep = {
      op: 'compressed',
      out: 'o',
      lse: 'l',
      q: 'q',
      k: 'kp',
      v: 'vp',
      block: 8,
      seqKV: N,
      causal: true,
      scale: 0.5,
      kernel: { featureMap: 'trig-rf' as 'relu' },
    };
    await expect(gpu.program.step(step, env)).rejects.toThrow(/'trig-rf'/);
    await expect(gpu.program.step(step, env)).rejects.toThrow(UnsupportedError);
    gpu.program.free(q);
    gpu.program.free(kp);
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
