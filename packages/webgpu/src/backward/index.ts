/// <reference types="@webgpu/types" preserve="true" />
/**
 * The backward pass: what the façade's `backward`, `backwardResident` and `prepareBackward` call.
 * Plans once (backward/plan.ts), emits the kernels (backward/softmax.ts), binds them to resident
 * buffers and returns a PreparedBackward that encodes the passes; gradients stay on the device.
 */
import {
  type AttentionSpec,
  InputError,
  ResourceLimitError,
  type RunOptions,
  SpecError,
  tensorSizes,
  UnsupportedError,
} from '@tessera/core';
import { randomFeatureMatrix } from '@tessera/core/backend';
import {
  encodePasses,
  type Pass,
  type PlanContext,
  type ResidentInputs,
  type ResidentOutputs,
  STORAGE,
  type TimestampWrites,
} from '../context.js';
import type { GpuLimits } from '../gpu.js';
import { Usage } from '../gpu.js';
import {
  emitLinearBackward,
  LINEAR_BACKWARD_PASSES,
  type LinearBackwardPlan,
  planLinearBackward,
} from './linear.js';
import { type BackwardPlan, type BackwardRequest, layoutWords, planBackward } from './plan.js';
import { type BackwardModules, emitBackwardModules } from './softmax.js';

export type { LinearBackwardPlan } from './linear.js';
export type { BackwardPlan, BackwardRequest, BackwardTile } from './plan.js';
export { planBackward } from './plan.js';
export type { BackwardModules } from './softmax.js';

export interface WebGpuBackwardOptions extends RunOptions, BackwardRequest {}

/** What a resident backward reads: the forward's inputs and outputs, and ∂loss/∂out (f32, out's layout). */
export interface ResidentBackwardInputs {
  readonly spec: AttentionSpec;
  readonly inputs: ResidentInputs;
  readonly outputs: ResidentOutputs;
  readonly dOut: GPUBuffer;
}

/** Gradients left on the device (f32, the spec's layout); `readbackGradients` copies them. */
export interface ResidentGradients {
  readonly spec: AttentionSpec;
  readonly dq: GPUBuffer;
  readonly dk: GPUBuffer;
  readonly dv: GPUBuffer;
  /** By slot of `spec.tensors`, as AttentionGradients' `grads`. */
  readonly grads: readonly (GPUBuffer | null)[];
}

/** Everything one backward dispatches, bound to its buffers; encode it as often as wanted. */
export interface PreparedBackward {
  readonly spec: AttentionSpec;
  readonly plan: BackwardPlan | LinearBackwardPlan;
  readonly gradients: ResidentGradients;
  /** Bytes allocated beyond the inputs and the gradients (row statistics, layout, partials). */
  readonly extraBytes: number;
  readonly passes: number;
  encode(encoder: GPUCommandEncoder, timestamps?: TimestampWrites): void;
  /** Returns the temporaries to the pool; the gradients stay until released. */
  dispose(): void;
}

/** Typed errors for what the backward cannot run, before any work. */
export function checkBackward(options: WebGpuBackwardOptions): void {
  const strategy = options.strategy ?? 'tiled';
  if (strategy !== 'tiled' && strategy !== 'naive')
    throw new SpecError(`strategy must be 'tiled' or 'naive' (got ${JSON.stringify(strategy)})`);
  if (strategy === 'naive')
    throw new UnsupportedError(
      "the WebGPU backward runs only with strategy 'tiled' (it never stores the N×N scores)",
    );
}

/** The plan a backward with these options would run (its errors before any work). */
export function planFor(
  spec: AttentionSpec,
  limits: GpuLimits,
  options: WebGpuBackwardOptions = {},
): BackwardPlan | LinearBackwardPlan {
  checkBackward(options);
  if (spec.kernel.type !== 'linear') return planBackward(spec, limits, options);
  const plan = planLinearBackward(spec);
  const maxDim = limits.maxComputeWorkgroupsPerDimension;
  for (const [name, [x, y]] of Object.entries(plan.grids)) {
    if (Math.max(x, y) > maxDim)
      throw new ResourceLimitError(
        `the linear backward's ${name} grid ${x}×${y} exceeds maxComputeWorkgroupsPerDimension (${maxDim})`,
      );
  }
  return plan;
}

/** The WGSL modules a backward with these options would compile. */
export function emitBackward(
  spec: AttentionSpec,
  limits: GpuLimits,
  storage: 'f32' | 'f16',
  options: WebGpuBackwardOptions = {},
): BackwardModules {
  const plan = planFor(spec, limits, options);
  if ('words' in plan) return { linear: emitLinearBackward(spec, plan, storage) };
  return { ...emitBackwardModules(spec, plan, storage) };
}

function checkResident(spec: AttentionSpec, r: ResidentBackwardInputs): void {
  for (const [name, s] of [
    ['resident backward inputs', r.spec],
    ['resident inputs', r.inputs.spec],
    ['resident outputs', r.outputs.spec],
  ] as const) {
    if (s.hash !== spec.hash || s.dtype !== spec.dtype)
      throw new InputError(`${name} were made for spec ${s.hash}, not ${spec.hash}`);
  }
  const outBytes = tensorSizes(spec).out * 4;
  if (r.dOut.size < outBytes)
    throw new InputError(
      `dOut holds ${r.dOut.size} bytes, expected at least ${outBytes} (f32, out's shape)`,
    );
}

export async function prepareBackward(
  p: PlanContext,
  spec: AttentionSpec,
  resident: ResidentBackwardInputs,
  options: WebGpuBackwardOptions = {},
): Promise<PreparedBackward> {
  checkResident(spec, resident);
  const anyPlan = planFor(spec, p.ctx.limits, options);
  if ('words' in anyPlan) return prepareLinear(p, spec, resident, anyPlan);
  const plan = anyPlan;
  const device = p.ctx.device;
  const storage = resident.inputs.storage;
  const sizes = tensorSizes(spec);
  const rows = spec.batch * spec.headsQ * spec.seqQ;
  p.checkBinding('dq', sizes.q * 4);
  p.checkBinding('dk', sizes.k * 4);
  p.checkBinding('dv', sizes.v * 4);
  p.checkBinding("the backward's row statistics (lse, D)", rows * 8);
  const lay = layoutWords(spec, plan.tile);
  p.checkBinding("the backward's block layout and captured tensors", lay.words.byteLength);
  if (plan.accumulator)
    p.checkBinding(
      `the captured-tensor gradient partials (${plan.partials} dQ workgroups × ${plan.gradLength} f32)`,
      plan.partials * plan.gradLength * 4,
    );

  const modules = emitBackwardModules(spec, plan, storage);
  // Keyed by the source: modules that do not depend on an option are shared across its values.
  const pipe = (code: string) => p.pipeline(`backward|${code}`, code, 'main');
  const [prePipe, dkdvPipe, dqPipe, reducePipe] = await Promise.all([
    pipe(modules.prepass),
    pipe(modules.dkdv),
    pipe(modules.dq),
    modules.reduce ? pipe(modules.reduce) : null,
  ]);

  const temps: GPUBuffer[] = [];
  const temp = (bytes: number, label: string, usage = STORAGE): GPUBuffer => {
    const b = p.pool.acquire(bytes, usage, label);
    temps.push(b);
    return b;
  };
  const output = (bytes: number, label: string): GPUBuffer => p.pool.acquire(bytes, STORAGE, label);
  const aux = p.upload(lay.words, 'tessera backward aux');
  temps.push(aux);
  const params = temp(256, 'tessera backward params', Usage.UNIFORM | Usage.COPY_DST);
  device.queue.writeBuffer(
    params,
    0,
    new Uint32Array([
      lay.batches,
      lay.heads,
      lay.rowStart,
      lay.rowEntries,
      lay.colStart,
      lay.colEntries,
      0,
      0,
    ]),
  );
  const stats = temp(rows * 8, 'tessera backward stats');
  const dq = output(sizes.q * 4, 'tessera dq');
  const dk = output(sizes.k * 4, 'tessera dk');
  const dv = output(sizes.v * 4, 'tessera dv');
  const grads: (GPUBuffer | null)[] = spec.tensors.map(() => null);
  for (const g of plan.gradTensors) grads[g.slot] = output(g.length * 4, `tessera grad ${g.slot}`);
  const partial = plan.accumulator
    ? temp(plan.partials * plan.gradLength * 4, 'tessera backward partials')
    : null;
  const gradVec = reducePipe ? temp(plan.gradLength * 4, 'tessera backward grads') : null;

  const bind = (pipe: GPUComputePipeline, buffers: GPUBuffer[]): GPUBindGroup =>
    device.createBindGroup({
      layout: pipe.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  const { q, k, v } = resident.inputs;
  const pass = (
    pipeline: GPUComputePipeline,
    grid: readonly [number, number],
    buffers: GPUBuffer[],
  ): Pass => ({ pipeline, bindGroup: bind(pipeline, buffers), x: grid[0], y: grid[1], z: 1 });
  const passes: Pass[] = [
    pass(prePipe, plan.grids.prepass, [
      resident.outputs.out,
      resident.dOut,
      resident.outputs.lse,
      stats,
    ]),
    pass(dkdvPipe, plan.grids.dkdv, [q, k, v, resident.dOut, stats, dk, dv, aux, params]),
    pass(dqPipe, plan.grids.dq, [
      q,
      k,
      v,
      resident.dOut,
      stats,
      dq,
      aux,
      params,
      ...(partial ? [partial] : []),
    ]),
  ];
  if (reducePipe && partial && gradVec)
    passes.push(pass(reducePipe, plan.grids.reduce, [partial, gradVec]));

  const gradients: ResidentGradients = { spec, dq, dk, dv, grads };
  const extraBytes =
    aux.size + params.size + stats.size + (partial?.size ?? 0) + (gradVec?.size ?? 0);
  return {
    spec,
    plan,
    gradients,
    extraBytes,
    passes: passes.length,
    encode(encoder, ts) {
      encodePasses(encoder, passes, ts);
      for (const g of plan.gradTensors) {
        const dst = grads[g.slot] as GPUBuffer;
        if (gradVec) encoder.copyBufferToBuffer(gradVec, g.offset * 4, dst, 0, g.length * 4);
      }
    },
    dispose() {
      for (const t of temps) p.pool.release(t);
      temps.length = 0;
    },
  };
}

async function prepareLinear(
  p: PlanContext,
  spec: AttentionSpec,
  resident: ResidentBackwardInputs,
  plan: LinearBackwardPlan,
): Promise<PreparedBackward> {
  if (spec.kernel.type !== 'linear') throw new Error('prepareLinear needs a linear spec');
  const sizes = tensorSizes(spec);
  p.checkBinding('dq', sizes.q * 4);
  p.checkBinding('dk', sizes.k * 4);
  p.checkBinding('dv', sizes.v * 4);
  p.checkBinding("the linear backward's feature and state buffer", plan.words * 4);
  const storage = resident.inputs.storage;
  const code = emitLinearBackward(spec, plan, storage);
  const device = p.ctx.device;
  const bgl = device.createBindGroupLayout({
    entries: [0, 1, 2, 3, 4, 5, 6, 7].map((binding) => ({
      binding,
      visibility: 4, // GPUShaderStage.COMPUTE
      buffer: { type: binding <= 3 ? ('read-only-storage' as const) : ('storage' as const) },
    })),
  });
  const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
  const key = `backward-linear|${spec.hash}|${storage}`;
  const pipes = await Promise.all(
    LINEAR_BACKWARD_PASSES.map((e) => p.pipeline(key, code, e, layout)),
  );
  const work = p.pool.acquire(plan.words * 4, STORAGE, 'tessera linear backward work');
  if (spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf') {
    const w = randomFeatureMatrix(spec.kernel, spec.headDim);
    device.queue.writeBuffer(work, plan.w * 4, w.buffer as ArrayBuffer, w.byteOffset, w.byteLength);
  }
  const dq = p.pool.acquire(sizes.q * 4, STORAGE, 'tessera dq');
  const dk = p.pool.acquire(sizes.k * 4, STORAGE, 'tessera dk');
  const dv = p.pool.acquire(sizes.v * 4, STORAGE, 'tessera dv');
  const { q, k, v } = resident.inputs;
  const bindGroup = device.createBindGroup({
    layout: bgl,
    entries: [q, k, v, resident.dOut, dq, dk, dv, work].map((buffer, binding) => ({
      binding,
      resource: { buffer },
    })),
  });
  const passes: Pass[] = LINEAR_BACKWARD_PASSES.map((name, i) => {
    const [x, y] = plan.grids[name];
    return { pipeline: pipes[i] as GPUComputePipeline, bindGroup, x, y, z: 1 };
  });
  const temps = [work];
  return {
    spec,
    plan,
    gradients: { spec, dq, dk, dv, grads: spec.tensors.map(() => null) },
    extraBytes: work.size,
    passes: passes.length,
    encode(encoder, ts) {
      encodePasses(encoder, passes, ts);
    },
    dispose() {
      for (const t of temps) p.pool.release(t);
      temps.length = 0;
    },
  };
}

/** Returns a resident backward's gradients to the pool. */
export function releaseGradients(p: PlanContext, g: ResidentGradients): void {
  for (const b of [g.dq, g.dk, g.dv, ...g.grads]) if (b) p.pool.release(b);
}
