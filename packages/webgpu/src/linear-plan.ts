/// <reference types="@webgpu/types" preserve="true" />
/** Plans linear-attention runs: the scratch buffer, the random feature matrix, four passes. */
import { type AttentionSpec, ResourceLimitError, UnsupportedError } from '@tessera/core';
import { randomFeatureMatrix } from '@tessera/core/backend';
import type { Pass, PlanContext, PreparedRun, ResidentInputs, ResidentOutputs } from './context.js';
import { Usage } from './gpu.js';
import { emitLinear, LINEAR_THREADS, linearLayout } from './wgsl/linear.js';

const ENTRY_POINTS = ['key_pass', 'chunk_pass', 'prefix_pass', 'query_pass'] as const;

function check(spec: AttentionSpec, strategy: string): void {
  if (strategy !== 'tiled') {
    throw new UnsupportedError(
      `linear kernels run only with strategy 'tiled' on WebGPU (the naive baseline is softmax attention; got '${strategy}')`,
    );
  }
  void spec;
}

export type MakePrepared = (
  kernel: PreparedRun['kernel'],
  outputs: ResidentOutputs,
  passes: Pass[],
  temps: GPUBuffer[],
  extraBytes: number,
) => PreparedRun;

export const planLinear = {
  emit(p: PlanContext, spec: AttentionSpec, strategy: string): string {
    check(spec, strategy);
    return emitLinear(spec, linearLayout(spec), p.storageFor(spec));
  },

  async prepare(
    p: PlanContext,
    spec: AttentionSpec,
    inputs: ResidentInputs,
    strategy: string,
    newOutputs: () => ResidentOutputs,
    make: MakePrepared,
  ): Promise<PreparedRun> {
    check(spec, strategy);
    if (spec.kernel.type !== 'linear') throw new Error('planLinear needs a linear spec');
    const lay = linearLayout(spec);
    p.checkBinding("the linear kernel's feature and state buffer", lay.words * 4);
    const bhk = spec.batch * spec.headsKV;
    const E = lay.features * (spec.headDimV + 1);
    const T = LINEAR_THREADS;
    const grids: [number, number][] = [
      [Math.ceil(spec.seqKV / T), bhk],
      [lay.chunks, bhk],
      [Math.ceil(E / T), bhk],
      [Math.ceil(spec.seqQ / T), spec.batch * spec.headsQ],
    ];
    const maxDim = p.ctx.limits.maxComputeWorkgroupsPerDimension;
    grids.forEach(([x, y], i) => {
      if (Math.max(x, y) > maxDim)
        throw new ResourceLimitError(
          `linear ${ENTRY_POINTS[i]} grid ${x}×${y} exceeds maxComputeWorkgroupsPerDimension (${maxDim})`,
        );
    });
    const code = emitLinear(spec, lay, inputs.storage);
    const device = p.ctx.device;
    const bgl = device.createBindGroupLayout({
      entries: [0, 1, 2, 3, 4, 5].map((binding) => ({
        binding,
        visibility: 4,
        buffer: { type: binding <= 2 ? ('read-only-storage' as const) : ('storage' as const) },
      })),
    });
    const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
    const key = `linear|${spec.hash}|${inputs.storage}`;
    const pipes = await Promise.all(ENTRY_POINTS.map((e) => p.pipeline(key, code, e, layout)));
    const work = p.pool.acquire(
      lay.words * 4,
      Usage.STORAGE | Usage.COPY_DST,
      'tessera linear work',
    );
    if (spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf') {
      const w = randomFeatureMatrix(spec.kernel, spec.headDim);
      device.queue.writeBuffer(
        work,
        lay.w * 4,
        w.buffer as ArrayBuffer,
        w.byteOffset,
        w.byteLength,
      );
    }
    const outputs = newOutputs();
    const bindGroup = device.createBindGroup({
      layout: bgl,
      entries: [
        { binding: 0, resource: { buffer: inputs.q } },
        { binding: 1, resource: { buffer: inputs.k } },
        { binding: 2, resource: { buffer: inputs.v } },
        { binding: 3, resource: { buffer: outputs.out } },
        { binding: 4, resource: { buffer: outputs.lse } },
        { binding: 5, resource: { buffer: work } },
      ],
    });
    const passes: Pass[] = grids.map(([x, y], i) => ({
      pipeline: pipes[i] as GPUComputePipeline,
      bindGroup,
      x,
      y,
      z: 1,
    }));
    return make('linear', outputs, passes, [work], work.size);
  },
};
