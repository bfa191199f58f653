/// <reference types="@webgpu/types" preserve="true" />
/** createWebGpuBackend: the AttentionBackend over a GPUDevice, plus device-resident tensors. */
import {
  type AttentionBackend,
  type AttentionGradients,
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  type BackwardInputs,
  type BenchmarkOptions,
  type BenchmarkResult,
  blockLayout,
  InputError,
  packHalf,
  ResourceLimitError,
  roundToDtype,
  SpecError,
  TesseraError,
  tensorSizes,
  validateBackwardInputs,
  validateInputs,
} from '@tessera/core';
import {
  type BackwardModules,
  checkBackward,
  emitBackward,
  type PreparedBackward,
  planFor,
  prepareBackward,
  type ResidentBackwardInputs,
  type ResidentGradients,
  releaseGradients,
  type WebGpuBackwardOptions,
} from './backward/index.js';
import {
  encodePasses,
  type Pass,
  type PlanContext,
  type PreparedRun,
  type ResidentInputs,
  type ResidentOutputs,
  readF32,
  STORAGE,
  type WebGpuRunOptions,
  withErrorScopes,
} from './context.js';
import { DeviceLostError, ShaderCompileError } from './errors.js';
import { type AcquireOptions, acquireGpu, type GpuContext, MAP_READ_MODE, Usage } from './gpu.js';
import { planLinear } from './linear-plan.js';
import { BufferPool } from './pool.js';
import { createProgramOps, type WebGpuProgramOps } from './program/ops.js';
import { chooseFlashTile, type TileRequest, tileKey } from './tiles.js';
import { timeRuns } from './timing.js';
import { emitFlash, type FlashTile } from './wgsl/flash.js';
import { emitNaive, NAIVE_OUT_THREADS, NAIVE_SCORE_TILE } from './wgsl/naive.js';

export type {
  Pass,
  PlanContext,
  PreparedRun,
  ResidentInputs,
  ResidentOutputs,
  TimestampWrites,
  WebGpuRunOptions,
} from './context.js';

export interface WebGpuBackend extends AttentionBackend {
  readonly name: 'webgpu';
  /** The adapter's name, for reports. */
  readonly device: string;
  readonly gpuDevice: GPUDevice;
  /** What the device offers, as the backend uses it. */
  readonly capabilities: {
    readonly adapter: string;
    readonly f16: boolean;
    readonly subgroups: boolean;
    readonly timestampQuery: boolean;
    readonly limits: GpuContext['limits'];
  };
  run(
    spec: AttentionSpec,
    inputs: AttentionInputs,
    options?: WebGpuRunOptions,
  ): Promise<AttentionOutputs>;
  upload(spec: AttentionSpec, inputs: AttentionInputs): ResidentInputs;
  runResident(
    spec: AttentionSpec,
    inputs: ResidentInputs,
    options?: WebGpuRunOptions,
  ): Promise<ResidentOutputs>;
  readback(outputs: ResidentOutputs): Promise<AttentionOutputs>;
  /** Returns resident tensors to the pool (a ResidentBackwardInputs releases its dOut only). */
  release(
    resource:
      | ResidentInputs
      | ResidentOutputs
      | ResidentGradients
      | ResidentBackwardInputs
      | GPUBuffer,
  ): void;
  /** Builds (and compiles) what a run would dispatch, for benchmarks and inspection. */
  prepare(
    spec: AttentionSpec,
    inputs: ResidentInputs,
    options?: WebGpuRunOptions,
  ): Promise<PreparedRun>;
  /** The WGSL a run with these options would compile. */
  emit(spec: AttentionSpec, options?: WebGpuRunOptions): string;
  emitSource(spec: AttentionSpec, options?: WebGpuRunOptions): string;
  /**
   * Gradients of q, k, v and of the captured f32 tensors the score mod reads (FlashAttention-2
   * style: probabilities recomputed from q, k and lse; deterministic, no atomics).
   */
  backward(
    spec: AttentionSpec,
    inputs: BackwardInputs,
    options?: WebGpuBackwardOptions,
  ): Promise<AttentionGradients>;
  /** The backward on device-resident buffers (e.g. a forward's inputs and outputs); gradients stay there. */
  backwardResident(
    spec: AttentionSpec,
    inputs: ResidentBackwardInputs,
    options?: WebGpuBackwardOptions,
  ): Promise<ResidentGradients>;
  /** Builds (and compiles) what a backward would dispatch, for benchmarks and training loops. */
  prepareBackward(
    spec: AttentionSpec,
    inputs: ResidentBackwardInputs,
    options?: WebGpuBackwardOptions,
  ): Promise<PreparedBackward>;
  /** An f32 tensor (e.g. ∂loss/∂out) as a storage buffer, for `backwardResident`. */
  uploadTensor(data: Float32Array, label?: string): GPUBuffer;
  readbackGradients(gradients: ResidentGradients): Promise<AttentionGradients>;
  /** The WGSL modules a backward with these options would compile. */
  emitBackward(spec: AttentionSpec, options?: WebGpuBackwardOptions): BackwardModules;
  /** Program steps on device-resident f32 buffers (`runProgram` from @tessera/core). */
  readonly program: WebGpuProgramOps;
}

export interface WebGpuBackendOptions extends AcquireOptions {}

export async function createWebGpuBackend(
  options: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  const ctx = await acquireGpu(options);
  const subgroupsLinear = ctx.subgroups ? await probeSubgroupLanes(ctx.device) : false;
  return new Backend(ctx, subgroupsLinear);
}

/** True when subgroup lanes follow local_invocation_index (lane = index mod size), as kernels assume. */
async function probeSubgroupLanes(device: GPUDevice): Promise<boolean> {
  const code = [
    'enable subgroups;',
    '@group(0) @binding(0) var<storage, read_write> o: array<u32>;',
    '@compute @workgroup_size(256)',
    'fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) n: u32) {',
    '  o[i] = select(0u, 1u, lane == i % n && n >= 4u && n <= 128u);',
    '}',
  ].join('\n');
  try {
    const module = device.createShaderModule({ code });
    const pipeline = await device.createComputePipelineAsync({
      layout: 'auto',
      compute: { module, entryPoint: 'main' },
    });
    const buf = device.createBuffer({ size: 1024, usage: Usage.STORAGE | Usage.COPY_SRC });
    const read = device.createBuffer({ size: 1024, usage: Usage.MAP_READ | Usage.COPY_DST });
    const bg = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: buf } }],
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(1);
    pass.end();
    enc.copyBufferToBuffer(buf, 0, read, 0, 1024);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(MAP_READ_MODE);
    const ok = new Uint32Array(read.getMappedRange()).every((x) => x === 1);
    read.unmap();
    buf.destroy();
    read.destroy();
    return ok;
  } catch {
    return false;
  }
}

class Backend implements WebGpuBackend {
  readonly name = 'webgpu' as const;
  readonly device: string;
  readonly gpuDevice: GPUDevice;
  readonly capabilities: WebGpuBackend['capabilities'];
  private readonly pool: BufferPool;
  private readonly pipelines = new Map<string, Promise<GPUComputePipeline>>();
  private readonly layouts = new WeakMap<AttentionSpec, Map<string, GPUBuffer>>();
  private readonly owned = new Set<GPUBuffer>();
  private lost: GPUDeviceLostInfo | null = null;
  private disposed = false;
  private readonly planCtx: PlanContext;
  readonly program: WebGpuProgramOps;

  constructor(
    private readonly ctx: GpuContext,
    subgroupsLinear: boolean,
  ) {
    this.gpuDevice = ctx.device;
    this.device = ctx.adapterName;
    this.pool = new BufferPool(ctx.device);
    this.capabilities = {
      adapter: ctx.adapterName,
      f16: ctx.f16,
      subgroups: ctx.subgroups && subgroupsLinear,
      timestampQuery: ctx.timestampQuery,
      limits: ctx.limits,
    };
    ctx.device.lost.then((info) => {
      this.lost = info;
    });
    this.planCtx = {
      ctx,
      pool: this.pool,
      pipeline: (key, code, entryPoint, layout) => this.pipeline(key, code, entryPoint, layout),
      checkBinding: (name, bytes) => this.checkBinding(name, bytes),
      storageFor: (spec) => this.storageFor(spec),
      upload: (data, label, extra) => this.uploadData(data, label, extra),
      tensorsBuffer: (spec) => this.tensorsBuffer(spec),
    };
    this.program = createProgramOps({
      plan: this.planCtx,
      alive: () => this.alive(),
      runResident: (spec, inputs) => this.runResident(spec, inputs),
    });
  }

  private alive(): void {
    if (this.disposed) throw new TesseraError('ERR_DISPOSED', 'this WebGPU backend was disposed');
    if (this.lost) {
      throw new DeviceLostError(
        `the WebGPU device was lost (${this.lost.reason}): ${this.lost.message}`,
        this.lost.reason,
      );
    }
  }

  private storageFor(spec: AttentionSpec): 'f32' | 'f16' {
    return spec.dtype === 'f16' && this.ctx.f16 ? 'f16' : 'f32';
  }

  private checkBinding(name: string, bytes: number): void {
    const { maxStorageBufferBindingSize, maxBufferSize } = this.ctx.limits;
    if (bytes > maxBufferSize)
      throw new ResourceLimitError(
        `${name} needs a ${bytes}-byte buffer, more than this device's maxBufferSize (${maxBufferSize})`,
      );
    if (bytes > maxStorageBufferBindingSize)
      throw new ResourceLimitError(
        `${name} needs ${bytes} bytes bound as storage, more than this device's maxStorageBufferBindingSize (${maxStorageBufferBindingSize})`,
      );
  }

  private async pipeline(
    key: string,
    code: string,
    entryPoint: string,
    layout?: GPUPipelineLayout,
  ): Promise<GPUComputePipeline> {
    const full = `${key}|${entryPoint}`;
    let hit = this.pipelines.get(full);
    if (!hit) {
      hit = this.compile(code, entryPoint, layout);
      this.pipelines.set(full, hit);
      hit.catch(() => this.pipelines.delete(full));
    }
    return hit;
  }

  private async compile(
    code: string,
    entryPoint: string,
    layout?: GPUPipelineLayout,
  ): Promise<GPUComputePipeline> {
    const device = this.gpuDevice;
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code });
    const info = await module.getCompilationInfo();
    const scoped = await device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length > 0 || scoped) {
      const text = errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('\n');
      throw new ShaderCompileError(
        `generated WGSL failed to compile:\n${text || scoped?.message}`,
        code,
      );
    }
    try {
      return await device.createComputePipelineAsync({
        layout: layout ?? 'auto',
        compute: { module, entryPoint },
      });
    } catch (cause) {
      throw new ShaderCompileError(
        `pipeline creation failed for entry point ${entryPoint}: ${(cause as Error).message}`,
        code,
      );
    }
  }

  private uploadData(data: ArrayBufferView, label: string, extraUsage = 0): GPUBuffer {
    const bytes = Math.ceil(data.byteLength / 4) * 4;
    const buf = this.pool.acquire(bytes, STORAGE | extraUsage, label);
    if (data.byteLength % 4 === 0) {
      this.gpuDevice.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
    } else {
      const padded = new Uint8Array(bytes);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.gpuDevice.queue.writeBuffer(buf, 0, padded);
    }
    return buf;
  }

  private tensorsBuffer(spec: AttentionSpec): GPUBuffer | null {
    if (spec.tensors.length === 0) return null;
    const total = spec.tensors.reduce((n, t) => n + t.length, 0);
    const words = new Uint32Array(total);
    let offset = 0;
    for (const t of spec.tensors) {
      words.set(new Uint32Array(t.data.buffer, t.data.byteOffset, t.length), offset);
      offset += t.length;
    }
    this.checkBinding('captured tensors', words.byteLength);
    return this.uploadData(words, 'tessera tensors');
  }

  private layoutBuffer(
    spec: AttentionSpec,
    tile: FlashTile,
  ): { buffer: GPUBuffer; entries: number; batches: number; heads: number } {
    const layout = blockLayout(spec, { blockQ: tile.blockQ, blockKV: tile.blockKV });
    const words = new Uint32Array(layout.rowStart.length + layout.kvBlocks.length);
    words.set(layout.rowStart);
    for (let i = 0; i < layout.kvBlocks.length; i++) {
      words[layout.rowStart.length + i] =
        ((layout.kvBlocks[i] as number) | ((layout.full[i] as number) << 31)) >>> 0;
    }
    const key = `${tile.blockQ}x${tile.blockKV}`;
    let perSpec = this.layouts.get(spec);
    if (!perSpec) {
      perSpec = new Map();
      this.layouts.set(spec, perSpec);
    }
    let buffer = perSpec.get(key);
    if (!buffer) {
      this.checkBinding('block layout', words.byteLength);
      buffer = this.gpuDevice.createBuffer({
        size: Math.max(16, Math.ceil(words.byteLength / 16) * 16),
        usage: Usage.STORAGE | Usage.COPY_DST,
        label: 'tessera layout',
      });
      this.gpuDevice.queue.writeBuffer(buffer, 0, words);
      this.owned.add(buffer);
      perSpec.set(key, buffer);
    }
    return {
      buffer,
      entries: layout.rowStart.length,
      batches: layout.batches,
      heads: layout.heads,
    };
  }

  emitSource(spec: AttentionSpec, options: WebGpuRunOptions = {}): string {
    return this.emit(spec, options);
  }

  emit(spec: AttentionSpec, options: WebGpuRunOptions = {}): string {
    const strategy = options.strategy ?? 'tiled';
    if (spec.kernel.type === 'linear') return planLinear.emit(this.planCtx, spec, strategy);
    if (strategy === 'naive') return this.emitNaiveFor(spec);
    const tile = chooseFlashTile(spec, this.ctx.limits, this.tileRequest(spec, options));
    return emitFlash(spec, { tile, storage: this.storageFor(spec) });
  }

  private emitNaiveFor(spec: AttentionSpec): string {
    const softmaxThreads = Math.min(256, this.ctx.limits.maxComputeInvocationsPerWorkgroup);
    return emitNaive(spec, {
      storage: this.storageFor(spec),
      subgroups: this.capabilities.subgroups,
      softmaxThreads,
    });
  }

  private tileRequest(_spec: AttentionSpec, o: WebGpuRunOptions): TileRequest {
    return {
      blockQ: o.blockQ,
      blockKV: o.blockKV,
      rowsPerThread: o.rowsPerThread,
      qStage: o.qStage,
      unroll: o.unroll,
    };
  }

  upload(spec: AttentionSpec, inputs: AttentionInputs): ResidentInputs {
    this.alive();
    validateInputs(spec, inputs);
    const storage = this.storageFor(spec);
    const sizes = tensorSizes(spec);
    const eb = storage === 'f16' ? 2 : 4;
    for (const name of ['q', 'k', 'v'] as const) this.checkBinding(name, sizes[name] * eb);
    this.checkBinding('out', sizes.out * 4);
    const conv = (x: Float32Array): ArrayBufferView =>
      storage === 'f16'
        ? packHalf(x, 'f16')
        : spec.dtype === 'f32'
          ? x
          : roundToDtype(x, spec.dtype);
    return {
      spec,
      storage,
      q: this.uploadData(conv(inputs.q), 'tessera q'),
      k: this.uploadData(conv(inputs.k), 'tessera k'),
      v: this.uploadData(conv(inputs.v), 'tessera v'),
    };
  }

  release(
    resource:
      | ResidentInputs
      | ResidentOutputs
      | ResidentGradients
      | ResidentBackwardInputs
      | GPUBuffer,
  ): void {
    if ('dq' in resource) releaseGradients(this.planCtx, resource);
    else if ('dOut' in resource) this.pool.release(resource.dOut);
    else if (!('spec' in resource)) this.pool.release(resource);
    else if ('q' in resource) {
      this.pool.release(resource.q);
      this.pool.release(resource.k);
      this.pool.release(resource.v);
    } else {
      this.pool.release(resource.out);
      this.pool.release(resource.lse);
    }
  }

  async prepare(
    spec: AttentionSpec,
    inputs: ResidentInputs,
    options: WebGpuRunOptions = {},
  ): Promise<PreparedRun> {
    this.alive();
    if (inputs.spec.hash !== spec.hash || inputs.spec.dtype !== spec.dtype) {
      throw new InputError(
        `resident inputs were uploaded for spec ${inputs.spec.hash}, not ${spec.hash}`,
      );
    }
    const strategy = options.strategy ?? 'tiled';
    if (strategy !== 'tiled' && strategy !== 'naive')
      throw new SpecError(`strategy must be 'tiled' or 'naive' (got ${JSON.stringify(strategy)})`);
    return withErrorScopes(this.gpuDevice, async () => {
      if (spec.kernel.type === 'linear') {
        return planLinear.prepare(
          this.planCtx,
          spec,
          inputs,
          strategy,
          () => this.newOutputs(spec),
          (kernel, outputs, passes, temps, extra) =>
            this.prepared(spec, 'tiled', kernel, null, outputs, passes, temps, extra),
        );
      }
      if (strategy === 'naive') return this.prepareNaive(spec, inputs);
      return this.prepareFlash(spec, inputs, options);
    });
  }

  private newOutputs(spec: AttentionSpec): ResidentOutputs {
    const sizes = tensorSizes(spec);
    return {
      spec,
      out: this.pool.acquire(sizes.out * 4, STORAGE, 'tessera out'),
      lse: this.pool.acquire(sizes.lse * 4, STORAGE, 'tessera lse'),
    };
  }

  private async prepareFlash(
    spec: AttentionSpec,
    inputs: ResidentInputs,
    options: WebGpuRunOptions,
  ): Promise<PreparedRun> {
    const tile = chooseFlashTile(spec, this.ctx.limits, this.tileRequest(spec, options));
    const storage = inputs.storage;
    const key = `flash|${spec.hash}|${tileKey(tile)}|${storage}`;
    const code = emitFlash(spec, { tile, storage });
    const { buffer: layoutBuf, entries, batches, heads } = this.layoutBuffer(spec, tile);
    const pipeline = await this.pipeline(key, code, 'main');
    const tensors = this.tensorsBuffer(spec);
    const outputs = this.newOutputs(spec);
    const maxDim = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    const numQBlocks = Math.ceil(spec.seqQ / tile.blockQ);
    const bh = spec.batch * spec.headsQ;
    // Grids larger than the per-dimension limit run as several dispatches with base offsets.
    const chunks: [number, number, number, number][] = [];
    for (let q = 0; q < numQBlocks; q += maxDim)
      for (let h = 0; h < bh; h += maxDim)
        chunks.push([q, h, Math.min(maxDim, numQBlocks - q), Math.min(maxDim, bh - h)]);
    const align = Math.max(256, this.ctx.limits.minUniformBufferOffsetAlignment);
    const params = this.pool.acquire(
      align * chunks.length,
      Usage.UNIFORM | Usage.COPY_DST,
      'tessera params',
    );
    const words = new Uint32Array((align / 4) * chunks.length);
    chunks.forEach(([q, h], i) => {
      words.set([q, h, batches, heads, entries], (i * align) / 4);
    });
    this.gpuDevice.queue.writeBuffer(params, 0, words);
    const layout = pipeline.getBindGroupLayout(0);
    const passes: Pass[] = chunks.map(([, , nq, nh], i) => ({
      pipeline,
      x: nq,
      y: nh,
      z: 1,
      bindGroup: this.gpuDevice.createBindGroup({
        layout,
        entries: [
          { binding: 0, resource: { buffer: inputs.q } },
          { binding: 1, resource: { buffer: inputs.k } },
          { binding: 2, resource: { buffer: inputs.v } },
          { binding: 3, resource: { buffer: outputs.out } },
          { binding: 4, resource: { buffer: outputs.lse } },
          { binding: 5, resource: { buffer: layoutBuf } },
          { binding: 6, resource: { buffer: params, offset: i * align, size: 32 } },
          ...(tensors ? [{ binding: 7, resource: { buffer: tensors } }] : []),
        ],
      }),
    }));
    const temps = [params, ...(tensors ? [tensors] : [])];
    return this.prepared(spec, 'tiled', 'flash', tile, outputs, passes, temps, layoutBuf.size);
  }

  private async prepareNaive(spec: AttentionSpec, inputs: ResidentInputs): Promise<PreparedRun> {
    const { batch, headsQ, seqQ, seqKV, headDimV } = spec;
    const bh = batch * headsQ;
    const scoreBytes = bh * seqQ * seqKV * 4;
    this.checkBinding(
      `the naive strategy's score buffer (batch ${batch} × heads ${headsQ} × ${seqQ} × ${seqKV} f32)`,
      scoreBytes,
    );
    const maxDim = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    const grids: [string, number, number, number][] = [
      ['scores_pass', Math.ceil(seqKV / NAIVE_SCORE_TILE), Math.ceil(seqQ / NAIVE_SCORE_TILE), bh],
      ['softmax_pass', seqQ, bh, 1],
      ['weighted_pass', Math.ceil(headDimV / NAIVE_OUT_THREADS), seqQ, bh],
    ];
    for (const [name, x, y, z] of grids) {
      if (Math.max(x, y, z) > maxDim)
        throw new ResourceLimitError(
          `the naive strategy's ${name} grid ${x}×${y}×${z} exceeds maxComputeWorkgroupsPerDimension (${maxDim})`,
        );
    }
    const code = this.emitNaiveFor(spec);
    const key = `naive|${spec.hash}|${inputs.storage}|${this.capabilities.subgroups}`;
    const hasTensors = spec.tensors.length > 0;
    const entries: GPUBindGroupLayoutEntry[] = [0, 1, 2, 3, 4, 5, ...(hasTensors ? [7] : [])].map(
      (binding) => ({
        binding,
        visibility: 4, // GPUShaderStage.COMPUTE
        buffer: { type: binding <= 2 || binding === 7 ? 'read-only-storage' : 'storage' },
      }),
    );
    const bgl = this.gpuDevice.createBindGroupLayout({ entries });
    const pipelineLayout = this.gpuDevice.createPipelineLayout({ bindGroupLayouts: [bgl] });
    const pipes = await Promise.all(
      grids.map(([name]) => this.pipeline(`${key}|${entries.length}`, code, name, pipelineLayout)),
    );
    const scores = this.pool.acquire(scoreBytes, Usage.STORAGE, 'tessera naive scores');
    const tensors = this.tensorsBuffer(spec);
    const outputs = this.newOutputs(spec);
    const bindGroup = this.gpuDevice.createBindGroup({
      layout: pipes[0]?.getBindGroupLayout(0) ?? bgl,
      entries: [
        { binding: 0, resource: { buffer: inputs.q } },
        { binding: 1, resource: { buffer: inputs.k } },
        { binding: 2, resource: { buffer: inputs.v } },
        { binding: 3, resource: { buffer: outputs.out } },
        { binding: 4, resource: { buffer: outputs.lse } },
        { binding: 5, resource: { buffer: scores } },
        ...(tensors ? [{ binding: 7, resource: { buffer: tensors } }] : []),
      ],
    });
    const passes: Pass[] = grids.map(([, x, y, z], i) => ({
      pipeline: pipes[i] as GPUComputePipeline,
      bindGroup,
      x,
      y,
      z,
    }));
    const temps = [scores, ...(tensors ? [tensors] : [])];
    return this.prepared(spec, 'naive', 'naive', null, outputs, passes, temps, scores.size);
  }

  /** Wraps passes into a PreparedRun. */
  prepared(
    spec: AttentionSpec,
    strategy: 'tiled' | 'naive',
    kernel: PreparedRun['kernel'],
    tile: FlashTile | null,
    outputs: ResidentOutputs,
    passes: Pass[],
    temps: GPUBuffer[],
    extraBytes: number,
  ): PreparedRun {
    const pool = this.pool;
    return {
      spec,
      strategy,
      kernel,
      tile,
      outputs,
      extraBytes,
      passes: passes.length,
      encode(encoder, ts) {
        encodePasses(encoder, passes, ts);
      },
      dispose() {
        for (const t of temps) pool.release(t);
        temps.length = 0;
      },
    };
  }

  async runResident(
    spec: AttentionSpec,
    inputs: ResidentInputs,
    options: WebGpuRunOptions = {},
  ): Promise<ResidentOutputs> {
    const run = await this.prepare(spec, inputs, options);
    const encoder = this.gpuDevice.createCommandEncoder();
    run.encode(encoder);
    this.gpuDevice.queue.submit([encoder.finish()]);
    run.dispose(); // later submissions are ordered after this one, so temporaries may be reused
    return run.outputs;
  }

  async readback(outputs: ResidentOutputs): Promise<AttentionOutputs> {
    this.alive();
    const sizes = tensorSizes(outputs.spec);
    const outBytes = sizes.out * 4;
    const lseBytes = sizes.lse * 4;
    const staging = this.pool.acquire(
      outBytes + lseBytes + 16,
      Usage.MAP_READ | Usage.COPY_DST,
      'tessera readback',
    );
    const lseOffset = Math.ceil(outBytes / 16) * 16;
    const enc = this.gpuDevice.createCommandEncoder();
    enc.copyBufferToBuffer(outputs.out, 0, staging, 0, Math.ceil(outBytes / 4) * 4);
    enc.copyBufferToBuffer(outputs.lse, 0, staging, lseOffset, Math.ceil(lseBytes / 4) * 4);
    this.gpuDevice.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(MAP_READ_MODE);
    } catch (cause) {
      this.alive();
      throw cause;
    }
    const range = staging.getMappedRange();
    const out = new Float32Array(range.slice(0, outBytes));
    const lse = new Float32Array(range.slice(lseOffset, lseOffset + lseBytes));
    staging.unmap();
    this.pool.release(staging);
    return { out, lse };
  }

  async run(
    spec: AttentionSpec,
    inputs: AttentionInputs,
    options: WebGpuRunOptions = {},
  ): Promise<AttentionOutputs> {
    const resident = this.upload(spec, inputs);
    try {
      const outputs = await this.runResident(spec, resident, options);
      try {
        return await this.readback(outputs);
      } finally {
        this.release(outputs);
      }
    } finally {
      this.release(resident);
    }
  }

  uploadTensor(data: Float32Array, label = 'tessera tensor'): GPUBuffer {
    this.alive();
    this.checkBinding(label, data.byteLength);
    return this.uploadData(data, label);
  }

  emitBackward(spec: AttentionSpec, options: WebGpuBackwardOptions = {}): BackwardModules {
    return emitBackward(spec, this.ctx.limits, this.storageFor(spec), options);
  }

  async prepareBackward(
    spec: AttentionSpec,
    inputs: ResidentBackwardInputs,
    options: WebGpuBackwardOptions = {},
  ): Promise<PreparedBackward> {
    this.alive();
    return withErrorScopes(this.gpuDevice, () =>
      prepareBackward(this.planCtx, spec, inputs, options),
    );
  }

  async backwardResident(
    spec: AttentionSpec,
    inputs: ResidentBackwardInputs,
    options: WebGpuBackwardOptions = {},
  ): Promise<ResidentGradients> {
    const run = await this.prepareBackward(spec, inputs, options);
    const encoder = this.gpuDevice.createCommandEncoder();
    run.encode(encoder);
    this.gpuDevice.queue.submit([encoder.finish()]);
    run.dispose(); // later submissions are ordered after this one
    return run.gradients;
  }

  async readbackGradients(g: ResidentGradients): Promise<AttentionGradients> {
    this.alive();
    const sizes = tensorSizes(g.spec);
    const parts = [
      { buffer: g.dq, length: sizes.q },
      { buffer: g.dk, length: sizes.k },
      { buffer: g.dv, length: sizes.v },
    ];
    g.grads.forEach((b, slot) => {
      if (b) parts.push({ buffer: b, length: (g.spec.tensors[slot] as { length: number }).length });
    });
    let read: Float32Array[];
    try {
      read = await readF32(this.planCtx, parts);
    } catch (cause) {
      this.alive();
      throw cause;
    }
    const [dq, dk, dv, ...rest] = read as [Float32Array, Float32Array, Float32Array];
    const grads = g.grads.map((b) => (b ? (rest.shift() ?? null) : null));
    return { dq, dk, dv, grads };
  }

  async backward(
    spec: AttentionSpec,
    inputs: BackwardInputs,
    options: WebGpuBackwardOptions = {},
  ): Promise<AttentionGradients> {
    this.alive();
    checkBackward(options);
    validateBackwardInputs(spec, inputs);
    planFor(spec, this.ctx.limits, options); // its errors before any upload
    const sizes = tensorSizes(spec);
    this.checkBinding('dOut', sizes.out * 4);
    const resident = this.upload(spec, inputs);
    const outputs: ResidentOutputs = {
      spec,
      out: this.uploadData(inputs.out, 'tessera out'),
      lse: this.uploadData(inputs.lse, 'tessera lse'),
    };
    const dOut = this.uploadData(inputs.dOut, 'tessera dOut');
    try {
      const g = await this.backwardResident(
        spec,
        { spec, inputs: resident, outputs, dOut },
        options,
      );
      try {
        return await this.readbackGradients(g);
      } finally {
        this.release(g);
      }
    } finally {
      this.release(resident);
      this.release(outputs);
      this.pool.release(dOut);
    }
  }

  /** Times `spec` with inputs uploaded once per set; GPU timestamps when the device has them. */
  async benchmark(
    spec: AttentionSpec,
    inputSets: readonly AttentionInputs[],
    options: BenchmarkOptions & WebGpuRunOptions,
  ): Promise<BenchmarkResult> {
    if (inputSets.length === 0) throw new InputError('benchmark() needs at least one input set');
    const resident = inputSets.map((x) => this.upload(spec, x));
    const runs = await Promise.all(resident.map((r) => this.prepare(spec, r, options)));
    try {
      const timesMs: number[] = [];
      let timing: 'device' | 'wall' = 'device';
      for (let i = 0; i < options.repeat; i++) {
        const run = runs[i % runs.length] as PreparedRun;
        const t = await timeRuns(this.gpuDevice, run, {
          warmup: i === 0 ? options.warmup : 0,
          repeat: 1,
          timestamps: this.ctx.timestampQuery,
        });
        timesMs.push(...t.timesMs);
        if (t.timing === 'wall') timing = 'wall';
      }
      const last = runs[(options.repeat - 1 + runs.length) % runs.length] as PreparedRun;
      const outputs = await this.readback(last.outputs);
      const sizes = tensorSizes(spec);
      const eb = resident[0]?.storage === 'f16' ? 2 : 4;
      const io = (sizes.q + sizes.k + sizes.v) * eb + (sizes.out + sizes.lse) * 4;
      return {
        timesMs,
        timing,
        outputs,
        extraDeviceBytes: last.extraBytes,
        peakDeviceBytes: io + last.extraBytes,
      };
    } finally {
      for (const r of runs) {
        r.dispose();
        this.release(r.outputs);
      }
      for (const r of resident) this.release(r);
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.pool.clear();
    this.program.dispose();
    for (const b of this.owned) b.destroy();
    this.owned.clear();
    this.pipelines.clear();
    if (this.ctx.owned) this.gpuDevice.destroy();
  }
}
