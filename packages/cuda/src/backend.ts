import {
  type AttentionBackend,
  type AttentionGradients,
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  type BackwardBenchmarkResult,
  type BackwardInputs,
  type BenchmarkOptions,
  type BenchmarkResult,
  type BlockLayout,
  BlockLayoutBuilder,
  blockLayout,
  ceilDiv,
  InputError,
  layoutContext,
  type RunOptions,
  tensorSizes,
  UnsupportedError,
  validateBackwardInputs,
  validateInputs,
} from '@tessera/core';
import {
  featureDim,
  linearInputScales,
  maskSlices,
  randomFeatureMatrix,
} from '@tessera/core/backend';
import {
  CudaBackward,
  type BackwardOptions as CudaBackwardOptions,
  type DeviceBackwardInputs,
  type DeviceGradients,
  type PreparedBackward,
} from './backward/index.js';
import { strides } from './emit/common.js';
import { type CudaModuleSource, emitCuda, launchGeometry, packParams } from './emit/index.js';
import { native } from './errors.js';
import { CudaProgramOps } from './program/ops.js';
import { KernelCompiler } from './runtime/compiler.js';
import { CudaContext, type LoadedModule, type ModuleText } from './runtime/context.js';
import { CudaDevice, type DeviceBuffer } from './runtime/device.js';
import { CudaTensor } from './tensor.js';

export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  readonly device?: number;
  /** Kernel cache folder; null disables the disk cache (default ~/.cache/tessera/cuda). */
  readonly cacheDir?: string | null;
  /** 'auto' (default): NVRTC when libnvrtc loads, else `nvcc -cubin`. */
  readonly compiler?: 'auto' | 'nvrtc' | 'nvcc';
}

export interface CudaRunOptions extends RunOptions {
  /** Force the CUDA-core path for a 16-bit spec (default: tensor cores when eligible). */
  readonly path?: 'mma' | 'simt';
  /** Tensor-core path: 16-row m-tiles per warp (see EmitOptions). */
  readonly warpTiles?: 1 | 2;
  /** Tensor-core path: block order (see EmitOptions). */
  readonly schedule?: 'grid' | 'lpt';
  /** Tensor-core path: rescale O only when a running max moved (see EmitOptions). */
  readonly lazyRescale?: boolean;
}

/** q, k, v as host arrays or as device tensors of the spec's dtype. */
export interface CudaInputs {
  readonly q: Float32Array | CudaTensor;
  readonly k: Float32Array | CudaTensor;
  readonly v: Float32Array | CudaTensor;
}

export interface DeviceOutputs {
  readonly out: CudaTensor;
  readonly lse: CudaTensor;
}

/** A spec lowered, compiled, loaded, with its layout and captured tensors on the device. */
interface Prepared {
  readonly module: CudaModuleSource;
  readonly functions: readonly bigint[];
  /** Device memory this spec holds beyond inputs and outputs (index buffers, tensors, scratch). */
  readonly extraBytes: number;
  launch(q: bigint, k: bigint, v: bigint, out: bigint, lse: bigint): void;
  release(): void;
}

const emitOptions = (o: CudaRunOptions) => ({
  blockQ: o.blockQ,
  blockKV: o.blockKV,
  path: o.path,
  warpTiles: o.warpTiles,
  schedule: o.schedule,
  lazyRescale: o.lazyRescale,
});

/** The naive strategy's layout: every block visited, the mask evaluated per element everywhere. */
function denseLayout(spec: AttentionSpec, blockQ: number, blockKV: number): BlockLayout {
  const ctx = layoutContext(spec, { blockQ, blockKV });
  const slices = maskSlices(spec.mask?.expr ?? null, ctx);
  const b = new BlockLayoutBuilder(ctx, slices);
  const rows = slices.batches * slices.heads * ceilDiv(spec.seqQ, blockQ);
  for (let r = 0; r < rows; r++) {
    b.pushRange(0, ceilDiv(spec.seqKV, blockKV), spec.mask === null);
    b.endRow();
  }
  return b.finish();
}

/**
 * The CUDA backend: lowers each spec to CUDA C++ (emitCuda), compiles it with NVRTC for this
 * device (nvcc as fallback), caches the cubin in memory and on disk, and launches it through the
 * addon. Offers device tensors (`tensor`, `launch`) so benchmarks time kernels, not copies.
 */
export class CudaBackend implements AttentionBackend {
  readonly name = 'cuda';
  private readonly prepared = new Map<AttentionSpec, Map<string, Promise<Prepared>>>();
  private disposed = false;
  /** Attention programs (`runProgram` from @tessera/core) with values kept on this device. */
  readonly program: CudaProgramOps;
  /** Device, compiler and module cache: what the backward pass and program steps share. */
  readonly context: CudaContext;
  private readonly gradients: CudaBackward;

  constructor(
    readonly cuda: CudaDevice,
    readonly compiler: KernelCompiler,
  ) {
    this.context = new CudaContext(cuda, compiler);
    this.program = new CudaProgramOps(this.context, (spec) => this.prepare(spec));
    this.gradients = new CudaBackward(this.context);
  }

  /** The backward pass (see backward/): host arrays in and out. */
  backward(
    spec: AttentionSpec,
    inputs: BackwardInputs,
    options: CudaBackwardOptions = {},
  ): Promise<AttentionGradients> {
    this.alive();
    return this.gradients.run(spec, inputs, options);
  }

  /** Device gradient tensors (f32) of the right sizes for `spec`'s backward pass. */
  gradientsFor(spec: AttentionSpec): DeviceGradients {
    this.alive();
    return this.gradients.gradientsFor(spec);
  }

  /** Enqueues the backward pass on device tensors without waiting (device-resident training). */
  launchBackward(
    spec: AttentionSpec,
    inputs: DeviceBackwardInputs,
    outputs: DeviceGradients,
    options: CudaBackwardOptions = {},
  ): Promise<void> {
    this.alive();
    return this.gradients.launch(spec, inputs, outputs, options);
  }

  /** Plans, compiles and loads `spec`'s backward pass (cached); its `launch` enqueues at once. */
  prepareBackward(
    spec: AttentionSpec,
    options: CudaBackwardOptions = {},
  ): Promise<PreparedBackward> {
    this.alive();
    return this.gradients.prepare(spec, options);
  }

  /**
   * Times the backward pass alone with CUDA events around its kernels, rotating over the input
   * sets (each uploaded once, in the spec's dtype; lse f32). extraDeviceBytes: what the prepared
   * pass holds beyond inputs, outputs and gradients (softmax: D, lse₂, layouts, partials,
   * fixed-point accumulators; linear: features, partials, per-row ρ and D).
   */
  async benchmarkBackward(
    spec: AttentionSpec,
    inputSets: readonly BackwardInputs[],
    options: BenchmarkOptions & CudaBackwardOptions,
  ): Promise<BackwardBenchmarkResult> {
    this.alive();
    if (inputSets.length === 0)
      throw new InputError('benchmarkBackward needs at least one input set');
    for (const s of inputSets) validateBackwardInputs(spec, s);
    const p = await this.gradients.prepare(spec, options);
    const owned: CudaTensor[] = [];
    const up = async (x: Float32Array, dtype: AttentionSpec['dtype']) => {
      const t = await this.tensor(x, dtype);
      owned.push(t);
      return t;
    };
    try {
      const sets: DeviceBackwardInputs[] = [];
      for (const s of inputSets)
        sets.push({
          q: await up(s.q, spec.dtype),
          k: await up(s.k, spec.dtype),
          v: await up(s.v, spec.dtype),
          out: await up(s.out, spec.dtype),
          lse: await up(s.lse, 'f32'),
          dOut: await up(s.dOut, spec.dtype),
        });
      const g = this.gradients.gradientsFor(spec);
      owned.push(g.dq, g.dk, g.dv, ...g.grads.filter((x): x is CudaTensor => x !== null));
      // Checks each set once; the timed launches below enqueue without checks.
      for (const s of sets) await this.gradients.launch(spec, s, g, options);
      await this.cuda.synchronize();
      this.cuda.pool.resetPeak();
      const at = (i: number) => sets[i % sets.length] as DeviceBackwardInputs;
      for (let i = 0; i < options.warmup; i++) p.launch(at(i), g);
      await this.cuda.synchronize();
      const timesMs: number[] = [];
      for (let i = 0; i < options.repeat; i++) {
        const s = at(i);
        timesMs.push(await this.cuda.time(() => p.launch(s, g)));
      }
      return {
        timesMs,
        timing: 'device',
        peakDeviceBytes: this.cuda.pool.peak,
        extraDeviceBytes: p.extraBytes,
      };
    } finally {
      await this.cuda.synchronize();
      for (const t of owned) t.dispose();
    }
  }

  get device(): string {
    return this.cuda.info.name;
  }

  /** The CUDA C++ this backend generates for `spec` (deterministic). */
  emitSource(spec: AttentionSpec, options: CudaRunOptions = {}): string {
    return emitCuda(spec, emitOptions(options)).source;
  }

  /** Uploads a host array as a device tensor of `dtype`. */
  tensor(data: Float32Array, dtype: AttentionSpec['dtype']): Promise<CudaTensor> {
    this.alive();
    return CudaTensor.from(this.cuda, data, dtype);
  }

  /** An uninitialised device tensor. */
  empty(dtype: AttentionSpec['dtype'], length: number): CudaTensor {
    this.alive();
    return CudaTensor.empty(this.cuda, dtype, length);
  }

  /** Device outputs of the right sizes for `spec`. */
  outputsFor(spec: AttentionSpec): DeviceOutputs {
    const sizes = tensorSizes(spec);
    return { out: this.empty(spec.dtype, sizes.out), lse: this.empty('f32', sizes.lse) };
  }

  async run(
    spec: AttentionSpec,
    inputs: CudaInputs | AttentionInputs,
    options: CudaRunOptions = {},
  ): Promise<AttentionOutputs> {
    this.alive();
    const host = this.checkInputs(spec, inputs);
    const prepared = await this.prepare(spec, options);
    const owned: CudaTensor[] = [];
    try {
      const dev = async (x: Float32Array | CudaTensor): Promise<CudaTensor> => {
        if (x instanceof CudaTensor) return x;
        const t = await CudaTensor.from(this.cuda, x, spec.dtype);
        owned.push(t);
        return t;
      };
      const [q, k, v] = [await dev(host.q), await dev(host.k), await dev(host.v)];
      const outputs = this.outputsFor(spec);
      owned.push(outputs.out, outputs.lse);
      // Poisoned with NaN first: an element the kernel fails to write cannot pass for a result.
      outputs.out.fill(0xff);
      outputs.lse.fill(0xff);
      prepared.launch(q.ptr, k.ptr, v.ptr, outputs.out.ptr, outputs.lse.ptr);
      // The copies are ordered after the launch on the default stream.
      const out = await outputs.out.toFloat32Array();
      const lse = await outputs.lse.toFloat32Array();
      return { out, lse };
    } finally {
      for (const t of owned) t.dispose();
    }
  }

  /** Enqueues `spec` on device tensors without waiting (compile first with `prepare`). */
  async launch(
    spec: AttentionSpec,
    inputs: { q: CudaTensor; k: CudaTensor; v: CudaTensor },
    outputs: DeviceOutputs,
    options: CudaRunOptions = {},
  ): Promise<void> {
    this.checkInputs(spec, inputs);
    const sizes = tensorSizes(spec);
    if (outputs.out.dtype !== spec.dtype || outputs.out.length !== sizes.out)
      throw new InputError(`out must be a ${spec.dtype} tensor of ${sizes.out} elements`);
    if (outputs.lse.dtype !== 'f32' || outputs.lse.length !== sizes.lse)
      throw new InputError(`lse must be an f32 tensor of ${sizes.lse} elements`);
    const p = await this.prepare(spec, options);
    p.launch(inputs.q.ptr, inputs.k.ptr, inputs.v.ptr, outputs.out.ptr, outputs.lse.ptr);
  }

  /** Device bytes `spec` holds beyond inputs and outputs once prepared. */
  async extraBytes(spec: AttentionSpec, options: CudaRunOptions = {}): Promise<number> {
    return (await this.prepare(spec, options)).extraBytes;
  }

  /** Times `spec` with CUDA events around the kernel(s) only, rotating over the input sets. */
  async benchmark(
    spec: AttentionSpec,
    inputSets: readonly AttentionInputs[],
    options: BenchmarkOptions & CudaRunOptions,
  ): Promise<BenchmarkResult> {
    this.alive();
    if (inputSets.length === 0) throw new InputError('benchmark needs at least one input set');
    for (const s of inputSets) validateInputs(spec, s);
    const p = await this.prepare(spec, options);
    const sets = await Promise.all(
      inputSets.map(async (s) => ({
        q: await this.tensor(s.q, spec.dtype),
        k: await this.tensor(s.k, spec.dtype),
        v: await this.tensor(s.v, spec.dtype),
      })),
    );
    const outputs = this.outputsFor(spec);
    try {
      this.cuda.pool.resetPeak();
      const at = (i: number) => sets[i % sets.length] as (typeof sets)[number];
      for (let i = 0; i < options.warmup; i++) {
        const s = at(i);
        p.launch(s.q.ptr, s.k.ptr, s.v.ptr, outputs.out.ptr, outputs.lse.ptr);
      }
      await this.cuda.synchronize();
      const timesMs: number[] = [];
      for (let i = 0; i < options.repeat; i++) {
        const s = at(i);
        timesMs.push(
          await this.cuda.time(() =>
            p.launch(s.q.ptr, s.k.ptr, s.v.ptr, outputs.out.ptr, outputs.lse.ptr),
          ),
        );
      }
      return {
        timesMs,
        timing: 'device',
        peakDeviceBytes: this.cuda.pool.peak,
        extraDeviceBytes: p.extraBytes,
        outputs: {
          out: await outputs.out.toFloat32Array(),
          lse: await outputs.lse.toFloat32Array(),
        },
      };
    } finally {
      outputs.out.dispose();
      outputs.lse.dispose();
      for (const s of sets) for (const t of [s.q, s.k, s.v]) t.dispose();
    }
  }

  /** Lowers, compiles and loads `spec` (cached per spec and options). */
  prepare(spec: AttentionSpec, options: CudaRunOptions = {}): Promise<Prepared> {
    this.alive();
    const key = `${options.strategy ?? 'tiled'}|${options.path ?? ''}|${options.blockQ ?? ''}|${options.blockKV ?? ''}|${options.warpTiles ?? ''}|${options.schedule ?? ''}|${options.lazyRescale ?? ''}`;
    let perSpec = this.prepared.get(spec);
    if (!perSpec) {
      perSpec = new Map();
      this.prepared.set(spec, perSpec);
    }
    let p = perSpec.get(key);
    if (!p) {
      p = this.build(spec, options);
      perSpec.set(key, p);
      p.catch(() => perSpec?.delete(key));
    }
    return p;
  }

  async synchronize(): Promise<void> {
    await this.cuda.synchronize();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    await this.cuda.synchronize();
    await this.program.dispose();
    await this.gradients.dispose();
    for (const perSpec of this.prepared.values()) {
      for (const p of perSpec.values()) (await p.catch(() => null))?.release();
    }
    this.prepared.clear();
    await this.context.unloadAll();
    this.cuda.release();
    this.disposed = true;
  }

  private alive(): void {
    if (this.disposed) throw new InputError('cuda backend used after dispose()');
  }

  private checkInputs(spec: AttentionSpec, inputs: CudaInputs | AttentionInputs): CudaInputs {
    if (typeof inputs !== 'object' || inputs === null)
      throw new InputError('inputs must be an object { q, k, v }');
    const all = [inputs.q, inputs.k, inputs.v];
    if (all.every((x) => x instanceof Float32Array)) {
      validateInputs(spec, inputs as AttentionInputs);
      return inputs;
    }
    const sizes = tensorSizes(spec);
    for (const name of ['q', 'k', 'v'] as const) {
      const t = inputs[name];
      if (t instanceof Float32Array) {
        if (t.length !== sizes[name])
          throw new InputError(`${name} has ${t.length} elements, expected ${sizes[name]}`);
        continue;
      }
      if (!(t instanceof CudaTensor))
        throw new InputError(`${name} must be a Float32Array or a CudaTensor`);
      if (t.dtype !== spec.dtype)
        throw new InputError(`${name} is a ${t.dtype} tensor; the spec's dtype is ${spec.dtype}`);
      if (t.length !== sizes[name])
        throw new InputError(`${name} has ${t.length} elements, expected ${sizes[name]}`);
    }
    for (const name of ['q', 'k', 'v'] as const) {
      const t = inputs[name];
      if (t instanceof Float32Array) {
        for (let i = 0; i < t.length; i++) {
          const x = t[i] as number;
          if (x - x !== 0) throw new InputError(`${name}[${i}] is ${x}: inputs must be finite`);
        }
      }
    }
    return inputs;
  }

  /** Compiles (cached by source) and loads a module; unloaded at dispose. Internal. */
  loadModule(module: ModuleText, label: string): Promise<LoadedModule> {
    return this.context.loadModule(module, label);
  }

  private async build(spec: AttentionSpec, options: CudaRunOptions): Promise<Prepared> {
    const module = emitCuda(spec, emitOptions(options));
    if (spec.batch > 65535 || spec.headsQ > 65535)
      throw new UnsupportedError(
        `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
      );
    const label = `${spec.hash}-${module.path}-${module.blockQ}x${module.blockKV}`;
    const { functions } = await this.loadModule(module, label);
    const buffers: DeviceBuffer[] = [];
    const upload = async (data: ArrayBufferView): Promise<DeviceBuffer> => {
      const b = this.cuda.pool.alloc(Math.max(1, data.byteLength));
      buffers.push(b);
      await this.cuda.upload(b, data);
      return b;
    };
    const release = () => {
      for (const b of buffers) b.release();
    };
    try {
      if (module.path === 'linear')
        return await this.buildLinear(spec, module, functions, upload, buffers, release);
      const layout =
        options.strategy === 'naive'
          ? denseLayout(spec, module.blockQ, module.blockKV)
          : blockLayout(spec, { blockQ: module.blockQ, blockKV: module.blockKV });
      const rowStart = await upload(layout.rowStart);
      const kvBlocks = await upload(layout.kvBlocks);
      const full = await upload(layout.full);
      const captured = [];
      for (const t of spec.tensors) captured.push(await upload(t.data));
      const geometry = launchGeometry(spec, module, layout);
      const order = geometry.order ? await upload(geometry.order) : null;
      const entry = module.kernels[0];
      const fn = functions[0];
      if (!entry || fn === undefined) throw new Error('softmax module has no kernel');
      const fixed: Record<string, bigint | number> = {
        row_start: rowStart.ptr,
        kv_blocks: kvBlocks.ptr,
        full: full.ptr,
        layout_batches: layout.batches,
        layout_heads: layout.heads,
      };
      captured.forEach((b, i) => {
        fixed[`t${i}`] = b.ptr;
      });
      if (order) fixed.q_order = order.ptr;
      const grid = geometry.grid;
      const block = [entry.threads, 1, 1] as const;
      return {
        module,
        functions,
        extraBytes: buffers.reduce((s, b) => s + b.bytes, 0),
        launch: (q, k, v, out, lse) => {
          const params = packParams(entry.params, { ...fixed, q, k, v, out, lse });
          native(() =>
            this.cuda.addon.launch(fn, grid, block, entry.dynamicSharedBytes, 0n, params),
          );
        },
        release,
      };
    } catch (e) {
      release();
      throw e;
    }
  }

  private async buildLinear(
    spec: AttentionSpec,
    module: CudaModuleSource,
    functions: readonly bigint[],
    upload: (data: ArrayBufferView) => Promise<DeviceBuffer>,
    buffers: DeviceBuffer[],
    release: () => void,
  ): Promise<Prepared> {
    if (spec.kernel.type !== 'linear') throw new Error('not a linear spec');
    const F = featureDim(spec);
    const random = spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf';
    const w = random ? await upload(randomFeatureMatrix(spec.kernel, spec.headDim)) : null;
    const scratch = (bytes: number) => {
      const b = this.cuda.pool.alloc(bytes);
      buffers.push(b);
      return b;
    };
    const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK } = spec;
    const phiQ = scratch(4 * B * H * SQ * F);
    const stabQ = scratch(4 * B * H * SQ);
    const phiK = scratch(4 * B * HK * SK * F);
    const stabK = scratch(4 * B * HK * SK);
    const [feat, scan] = module.kernels;
    const [featFn, scanFn] = functions;
    if (!feat || !scan || featFn === undefined || scanFn === undefined)
      throw new Error('linear module needs two kernels');
    const scales = linearInputScales(spec.scale);
    const qs = strides(spec, H, SQ, spec.headDim);
    const ks = strides(spec, HK, SK, spec.headDim);
    const featLaunch = (
      src: bigint,
      phi: DeviceBuffer,
      stab: DeviceBuffer,
      heads: number,
      seq: number,
      scale: number,
      s: typeof qs,
    ) => {
      const rows = B * heads * seq;
      const params = packParams(feat.params, {
        src,
        phi: phi.ptr,
        stab: stab.ptr,
        w: w?.ptr ?? 0n,
        s_b: s.batch,
        s_h: s.head,
        s_r: s.row,
        heads,
        seq,
        scale,
      });
      native(() =>
        this.cuda.addon.launch(
          featFn,
          [Math.ceil(rows / 4), 1, 1],
          [feat.threads, 1, 1],
          feat.dynamicSharedBytes,
          0n,
          params,
        ),
      );
    };
    return {
      module,
      functions,
      extraBytes: buffers.reduce((s, b) => s + b.bytes, 0),
      launch: (q, k, v, out, lse) => {
        featLaunch(q, phiQ, stabQ, H, SQ, scales.query, qs);
        featLaunch(k, phiK, stabK, HK, SK, scales.key, ks);
        const params = packParams(scan.params, {
          phi_q: phiQ.ptr,
          stab_q: stabQ.ptr,
          phi_k: phiK.ptr,
          stab_k: stabK.ptr,
          v,
          out,
          lse,
        });
        native(() =>
          this.cuda.addon.launch(
            scanFn,
            [Math.ceil(spec.headDimV / 32), H, B],
            [scan.threads, 1, 1],
            scan.dynamicSharedBytes,
            0n,
            params,
          ),
        );
      },
      release,
    };
  }
}

/**
 * Opens CUDA device `device` (default 0) and returns the backend. Rejects with
 * CudaUnavailableError ("no CUDA driver/GPU found: ...") on a machine without driver or GPU.
 */
export async function createCudaBackend(options: CudaBackendOptions = {}): Promise<CudaBackend> {
  const cuda = CudaDevice.open(options.device ?? 0);
  try {
    const compiler = await KernelCompiler.create({
      addon: cuda.addon,
      arch: cuda.arch,
      cacheDir: options.cacheDir,
      prefer: options.compiler,
    });
    return new CudaBackend(cuda, compiler);
  } catch (e) {
    cuda.release();
    throw e;
  }
}
