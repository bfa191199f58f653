import {
  type AttentionGradients,
  type AttentionSpec,
  type BackwardInputs,
  InputError,
  tensorSizes,
  UnsupportedError,
  validateBackwardInputs,
} from '@tessera/core';
import { randomFeatureMatrix } from '@tessera/core/backend';
import { packParams } from '../emit/common.js';
import type { CudaContext } from '../runtime/context.js';
import type { DeviceBuffer } from '../runtime/device.js';
import { CudaTensor } from '../tensor.js';
import {
  emitLinearBackward,
  type LinearBackwardModule,
  type LinearBackwardPlan,
  planLinearBackward,
} from './linear.js';
import {
  type BackwardPlan,
  type BackwardPlanOptions,
  gradientSlots,
  planBackward,
} from './plan.js';
import { type BackwardModule, emitBackward } from './softmax.js';

export {
  emitLinearBackward,
  type LinearBackwardModule,
  type LinearBackwardPlan,
  planLinearBackward,
} from './linear.js';
export { type BackwardPlan, planBackward } from './plan.js';
export { type BackwardModule, emitBackward, FIX_BITS } from './softmax.js';

/** The backward pass's inputs as device tensors: q, k, v, out, dOut of the spec's dtype; lse f32. */
export interface DeviceBackwardInputs {
  readonly q: CudaTensor;
  readonly k: CudaTensor;
  readonly v: CudaTensor;
  readonly out: CudaTensor;
  readonly lse: CudaTensor;
  readonly dOut: CudaTensor;
}

/** Gradients on the device, all f32: dq, dk, dv in the spec's layout, grads by tensor slot. */
export interface DeviceGradients {
  readonly dq: CudaTensor;
  readonly dk: CudaTensor;
  readonly dv: CudaTensor;
  readonly grads: readonly (CudaTensor | null)[];
}

export type BackwardOptions = BackwardPlanOptions;

/** A spec's backward pass compiled and loaded, its layouts, tensors and scratch on the device. */
export interface PreparedBackward {
  /** Softmax specs: the plan of plan.ts; linear kernels: that of linear.ts. */
  readonly plan: BackwardPlan | LinearBackwardPlan;
  readonly module: BackwardModule | LinearBackwardModule;
  /**
   * Device bytes held beyond inputs and gradients (softmax: layouts, D, lse2, partials, fixed-point
   * accumulators; linear: features, chunk maxima, partials, ρ and D per row).
   */
  readonly extraBytes: number;
  /** Enqueues the pass (synchronously; no checks: `CudaBackward.launch` checks). */
  launch(inputs: DeviceBackwardInputs, outputs: DeviceGradients): void;
  release(): void;
}

/**
 * The backward pass on one CUDA context. Softmax: the rowsum pre-pass, the dk/dv pass over the
 * layout's columns, the dq pass over its rows, and the captured-tensor reduction (softmax.ts).
 * Linear kernels: features, prefix sums for dq, suffix sums for dk/dv (linear.ts).
 */
export class CudaBackward {
  private readonly prepared = new Map<AttentionSpec, Map<string, Promise<PreparedBackward>>>();

  constructor(private readonly ctx: CudaContext) {}

  /** Host arrays in, host gradients out (q, k, v, out, dOut rounded to the spec's dtype). */
  async run(
    spec: AttentionSpec,
    inputs: BackwardInputs,
    options: BackwardOptions = {},
  ): Promise<AttentionGradients> {
    validateBackwardInputs(spec, inputs);
    const p = await this.prepare(spec, options);
    const owned: CudaTensor[] = [];
    const up = async (x: Float32Array, dtype: AttentionSpec['dtype']) => {
      const t = await CudaTensor.from(this.ctx.cuda, x, dtype);
      owned.push(t);
      return t;
    };
    try {
      const dev: DeviceBackwardInputs = {
        q: await up(inputs.q, spec.dtype),
        k: await up(inputs.k, spec.dtype),
        v: await up(inputs.v, spec.dtype),
        out: await up(inputs.out, spec.dtype),
        lse: await up(inputs.lse, 'f32'),
        dOut: await up(inputs.dOut, spec.dtype),
      };
      const g = this.gradientsFor(spec);
      owned.push(g.dq, g.dk, g.dv, ...g.grads.filter((x): x is CudaTensor => x !== null));
      // Poisoned with NaN: an element the kernels fail to write cannot pass for a gradient.
      for (const t of owned.slice(6)) t.fill(0xff);
      p.launch(dev, g);
      return {
        dq: await g.dq.toFloat32Array(),
        dk: await g.dk.toFloat32Array(),
        dv: await g.dv.toFloat32Array(),
        grads: await Promise.all(g.grads.map((t) => (t ? t.toFloat32Array() : null))),
      };
    } finally {
      for (const t of owned) t.dispose();
    }
  }

  /** Device gradients of the right sizes for `spec` (uninitialised; the pass writes every element). */
  gradientsFor(spec: AttentionSpec): DeviceGradients {
    const sizes = tensorSizes(spec);
    const slots = new Set(gradientSlots(spec));
    return {
      dq: CudaTensor.empty(this.ctx.cuda, 'f32', sizes.q),
      dk: CudaTensor.empty(this.ctx.cuda, 'f32', sizes.k),
      dv: CudaTensor.empty(this.ctx.cuda, 'f32', sizes.v),
      grads: spec.tensors.map((t, i) =>
        slots.has(i) ? CudaTensor.empty(this.ctx.cuda, 'f32', t.length) : null,
      ),
    };
  }

  /** Enqueues the backward pass on device tensors without waiting (compile first with `prepare`). */
  async launch(
    spec: AttentionSpec,
    inputs: DeviceBackwardInputs,
    outputs: DeviceGradients,
    options: BackwardOptions = {},
  ): Promise<void> {
    checkDevice(spec, inputs, outputs);
    const p = await this.prepare(spec, options);
    p.launch(inputs, outputs);
  }

  /** Device bytes the prepared pass holds beyond inputs and gradients. */
  async extraBytes(spec: AttentionSpec, options: BackwardOptions = {}): Promise<number> {
    return (await this.prepare(spec, options)).extraBytes;
  }

  /** Plans, lowers, compiles and loads the backward pass of `spec` (cached per spec and path). */
  prepare(spec: AttentionSpec, options: BackwardOptions = {}): Promise<PreparedBackward> {
    const key = options.path ?? '';
    let perSpec = this.prepared.get(spec);
    if (!perSpec) {
      perSpec = new Map();
      this.prepared.set(spec, perSpec);
    }
    let p = perSpec.get(key);
    if (!p) {
      // Planning throws (UnsupportedError) synchronously, before any device work.
      if (spec.kernel.type === 'linear') {
        if (options.path === 'mma')
          throw new UnsupportedError(
            "cuda: linear kernels have no tensor-core backward (got path 'mma'); leave path unset",
          );
        p = this.buildLinear(spec, planLinearBackward(spec));
      } else p = this.build(spec, planBackward(spec, options));
      perSpec.set(key, p);
      p.catch(() => perSpec?.delete(key));
    }
    return p;
  }

  async dispose(): Promise<void> {
    for (const perSpec of this.prepared.values())
      for (const p of perSpec.values()) (await p.catch(() => null))?.release();
    this.prepared.clear();
  }

  private async build(spec: AttentionSpec, plan: BackwardPlan): Promise<PreparedBackward> {
    const module = emitBackward(spec, plan);
    const { functions } = await this.ctx.loadModule(
      module,
      `${spec.hash}-backward-${plan.path}-${plan.blockQ}x${plan.blockKV}`,
    );
    const cuda = this.ctx.cuda;
    const buffers: DeviceBuffer[] = [];
    const alloc = (bytes: number) => {
      const b = cuda.pool.alloc(Math.max(4, bytes));
      buffers.push(b);
      return b;
    };
    const upload = async (data: ArrayBufferView) => {
      const b = alloc(data.byteLength);
      await cuda.upload(b, data);
      return b;
    };
    const release = () => {
      for (const b of buffers) b.release();
    };
    try {
      const { dqLayout: layout, columns } = plan;
      const rows = spec.batch * spec.headsQ * spec.seqQ;
      const fixed: Record<string, bigint | number> = {
        row_start: (await upload(layout.rowStart)).ptr,
        kv_blocks: (await upload(layout.kvBlocks)).ptr,
        full: (await upload(layout.full)).ptr,
        col_start: (await upload(columns.colStart)).ptr,
        q_blocks: (await upload(columns.qBlocks)).ptr,
        col_full: (await upload(columns.full)).ptr,
        delta: alloc(4 * rows).ptr,
        lse2: alloc(4 * rows).ptr,
        tpart: alloc(4 * plan.partialFloats).ptr,
        layout_batches: layout.batches,
        layout_heads: layout.heads,
      };
      for (const [i, t] of spec.tensors.entries()) fixed[`t${i}`] = (await upload(t.data)).ptr;
      const tfix = alloc(8 * plan.fixedCount);
      fixed.tfix = tfix.ptr;
      const fns = functions as readonly bigint[];
      return {
        plan,
        module,
        extraBytes: buffers.reduce((s, b) => s + b.bytes, 0),
        launch: (inputs, outputs) => {
          const values: Record<string, bigint | number> = {
            ...fixed,
            q: inputs.q.ptr,
            k: inputs.k.ptr,
            v: inputs.v.ptr,
            out: inputs.out.ptr,
            dout: inputs.dOut.ptr,
            lse: inputs.lse.ptr,
            dq: outputs.dq.ptr,
            dk: outputs.dk.ptr,
            dv: outputs.dv.ptr,
          };
          for (const s of plan.gradSlots) {
            const g = outputs.grads[s];
            if (!g)
              throw new InputError(
                `grads[${s}] must be an f32 tensor: the score modification reads tensor ${s}`,
              );
            values[`g${s}`] = g.ptr;
          }
          const params = packParams(module.pre.params, values);
          if (plan.fixedCount > 0) cuda.fill(tfix, 0);
          this.ctx.launch(fns[0] as bigint, module.pre, plan.grids.pre, params);
          this.ctx.launch(fns[1] as bigint, module.dkdv, plan.grids.dkdv, params);
          this.ctx.launch(fns[2] as bigint, module.dq, plan.grids.dq, params);
          if (module.grads) this.ctx.launch(fns[3] as bigint, module.grads, [1, 1, 1], params);
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
    plan: LinearBackwardPlan,
  ): Promise<PreparedBackward> {
    const module = emitLinearBackward(spec, plan);
    const { functions } = await this.ctx.loadModule(module, `${spec.hash}-backward-linear`);
    const cuda = this.ctx.cuda;
    const buffers: DeviceBuffer[] = [];
    const alloc = (bytes: number) => {
      const b = cuda.pool.alloc(Math.max(4, bytes));
      buffers.push(b);
      return b;
    };
    const release = () => {
      for (const b of buffers) b.release();
    };
    try {
      const fixed: Record<string, bigint | number> = {};
      for (const [name, floats] of Object.entries(plan.scratch)) {
        const field = name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
        fixed[field] = alloc(4 * floats).ptr;
      }
      if (plan.random && spec.kernel.type === 'linear') {
        const w = randomFeatureMatrix(spec.kernel, spec.headDim);
        const b = alloc(w.byteLength);
        await cuda.upload(b, w);
        fixed.w = b.ptr;
      } else fixed.w = 0n;
      const fns = functions as readonly bigint[];
      const order = [
        [module.featQ, plan.grids.featQ],
        [module.featK, plan.grids.featK],
        [module.cmax, plan.grids.cmax],
        [module.dqPart, plan.grids.dqPart],
        [module.dq, plan.grids.dq],
        [module.dkdv, plan.grids.dkdv],
        [module.dk, plan.grids.dk],
      ] as const;
      return {
        plan,
        module,
        extraBytes: buffers.reduce((s, b) => s + b.bytes, 0),
        launch: (inputs, outputs) => {
          const params = packParams(module.featQ.params, {
            ...fixed,
            q: inputs.q.ptr,
            k: inputs.k.ptr,
            v: inputs.v.ptr,
            dout: inputs.dOut.ptr,
            dq: outputs.dq.ptr,
            dk: outputs.dk.ptr,
            dv: outputs.dv.ptr,
          });
          order.forEach(([entry, grid], i) => {
            this.ctx.launch(fns[i] as bigint, entry, grid, params);
          });
        },
        release,
      };
    } catch (e) {
      release();
      throw e;
    }
  }
}

/** Device inputs and outputs of the right dtype and length, or an InputError naming the tensor. */
function checkDevice(spec: AttentionSpec, inputs: DeviceBackwardInputs, outputs: DeviceGradients) {
  const sizes = tensorSizes(spec);
  const want: [string, CudaTensor | undefined, AttentionSpec['dtype'], number][] = [
    ['q', inputs.q, spec.dtype, sizes.q],
    ['k', inputs.k, spec.dtype, sizes.k],
    ['v', inputs.v, spec.dtype, sizes.v],
    ['out', inputs.out, spec.dtype, sizes.out],
    ['dOut', inputs.dOut, spec.dtype, sizes.out],
    ['lse', inputs.lse, 'f32', sizes.lse],
    ['dq', outputs.dq, 'f32', sizes.q],
    ['dk', outputs.dk, 'f32', sizes.k],
    ['dv', outputs.dv, 'f32', sizes.v],
  ];
  for (const [name, t, dtype, length] of want) {
    if (!(t instanceof CudaTensor)) throw new InputError(`${name} must be a CudaTensor`);
    if (t.dtype !== dtype || t.length !== length)
      throw new InputError(
        `${name} must be a ${dtype} tensor of ${length} elements (got ${t.dtype}, ${t.length})`,
      );
  }
  for (const s of gradientSlots(spec)) {
    const g = outputs.grads[s];
    const len = spec.tensors[s]?.length ?? 0;
    if (!(g instanceof CudaTensor) || g.dtype !== 'f32' || g.length !== len)
      throw new InputError(
        `grads[${s}] must be an f32 tensor of ${len} elements: the score modification reads tensor ${s}`,
      );
  }
}
