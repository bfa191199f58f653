/**
 * ProgramOps for the CUDA backend: program tensors are f32 device buffers in [batch, heads, rows,
 * cols] order and stay on the device between steps; selections are CSR block layouts on the device
 * (row starts from the host, entries from the select kernel) in the format the flash kernels walk;
 * groupings are `rank` / `order` int32 buffers per (batch, head), written by the group kernels.
 */
import {
  type AttendStep,
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  type CompressedStep,
  ceilDiv,
  featureDim,
  type GroupStep,
  InputError,
  type ProgramOps,
  type ProgramStep,
  type SelectStep,
  type Shape,
  type StepEnv,
  type SubtractStep,
  tensorSizes,
  UnsupportedError,
} from '@tessera/core';
import type { CudaBackend } from '../backend.js';
import { SIMT_BLOCK_KV } from '../emit/flash-simt.js';
import { type CudaModuleSource, emitCuda, launchGeometry, packParams } from '../emit/index.js';
import { native } from '../errors.js';
import type { DeviceBuffer } from '../runtime/device.js';
import {
  emitConvert,
  emitDense,
  emitGate,
  emitMerge,
  emitPool,
  emitProject,
  emitSubtract,
  PROGRAM_THREADS,
  type ProgramKernel,
} from './emit.js';
import {
  emitCompressed,
  emitExpandSelection,
  emitSelect,
  emitSelectedRows,
  SELECTED_ROWS_MAX_COLUMNS,
} from './emit-attention.js';
import {
  emitGroupedAttend,
  emitGroupRoute,
  emitGroupSort,
  GROUP_MAX_CLUSTERS,
} from './emit-group.js';
import { compressedSpec, FeatureWriter } from './features.js';

export interface CudaTensorValue {
  readonly kind: 'tensor';
  readonly shape: Shape;
  readonly buffer: DeviceBuffer;
}

/** A selection: `layout` is its host shape and row starts (entries only on the device). */
export interface CudaSelectionValue {
  readonly kind: 'selection';
  readonly step: SelectStep;
  readonly layout: BlockLayout;
  readonly rowStart: DeviceBuffer;
  readonly kvBlocks: DeviceBuffer;
  readonly full: DeviceBuffer;
}

/**
 * A grouping of the `rows` rows of each of `batch × heads` slices into groups of `size`: per slice,
 * `rank` (row → place in the (cluster, row) order) and `order` (place → row), int32, on the device.
 */
export interface CudaGroupingValue {
  readonly kind: 'grouping';
  readonly batch: number;
  readonly heads: number;
  readonly rows: number;
  readonly size: number;
  readonly rank: DeviceBuffer;
  readonly order: DeviceBuffer;
}

export type CudaValue = CudaTensorValue | CudaSelectionValue | CudaGroupingValue;

/** Most value columns a grouped attend row accumulates in registers. */
const GROUPED_MAX_COLUMNS = 1024;

/** What `select` reuses between runs for one spec and block shape: the candidate layout, scratch. */
interface SelectPlan {
  readonly kernel: ProgramKernel;
  readonly rowStart: Int32Array;
  readonly buffers: readonly DeviceBuffer[];
  readonly ptrs: Readonly<Record<string, bigint>>;
}

type Launchable = Pick<CudaModuleSource, 'source' | 'kernels'>;
const elements = (s: Shape): number => s[0] * s[1] * s[2] * s[3];

/** The program steps on one CudaBackend; created by the backend as `backend.program`. */
export class CudaProgramOps implements ProgramOps<CudaValue> {
  private readonly plans = new Map<AttentionSpec, Map<string, Promise<SelectPlan>>>();
  private readonly captured = new Map<AttentionSpec, Promise<DeviceBuffer[]>>();
  private readonly features: FeatureWriter;
  private disposed = false;

  constructor(private readonly backend: CudaBackend) {
    this.features = new FeatureWriter(backend, (bytes) => this.alloc(bytes));
  }

  async upload(data: Float32Array, shape: Shape): Promise<CudaValue> {
    if (!(data instanceof Float32Array) || data.length !== elements(shape))
      throw new InputError(`upload: expected a Float32Array of ${elements(shape)} elements`);
    const buffer = this.alloc(data.byteLength);
    try {
      await this.backend.cuda.upload(buffer, data);
    } catch (e) {
      buffer.release();
      throw e;
    }
    return { kind: 'tensor', shape, buffer };
  }

  async download(value: CudaValue): Promise<Float32Array> {
    if (value.kind !== 'tensor')
      throw new InputError(`a ${value.kind} cannot be downloaded (only tensors can)`);
    const out = new Float32Array(elements(value.shape));
    await this.backend.cuda.download(value.buffer, out);
    return out;
  }

  bytes(value: CudaValue): number {
    if (value.kind === 'tensor') return value.buffer.bytes;
    if (value.kind === 'grouping') return value.rank.bytes + value.order.bytes;
    return value.rowStart.bytes + value.kvBlocks.bytes + value.full.bytes;
  }

  free(value: CudaValue): void {
    if (value.kind === 'tensor') value.buffer.release();
    else if (value.kind === 'grouping') for (const b of [value.rank, value.order]) b.release();
    else for (const b of [value.rowStart, value.kvBlocks, value.full]) b.release();
  }

  async step(step: ProgramStep, env: StepEnv<CudaValue>): Promise<Record<string, CudaValue>> {
    switch (step.op) {
      case 'pool': {
        const x = this.tensor(env, step.x);
        const k = emitPool(x.shape, step.block, step.weights !== undefined);
        const out = this.output(env, step.out);
        await this.launch(k, {
          x: x.buffer.ptr,
          ...(step.weights !== undefined ? { w: this.tensor(env, step.weights).buffer.ptr } : {}),
          out: out.buffer.ptr,
        });
        return { [step.out]: out };
      }
      case 'project': {
        const x = this.tensor(env, step.x);
        const m = this.tensor(env, step.matrix);
        const out = this.output(env, step.out);
        await this.launch(emitProject(x.shape, m.shape[2]), {
          x: x.buffer.ptr,
          matrix: m.buffer.ptr,
          out: out.buffer.ptr,
        });
        return { [step.out]: out };
      }
      case 'dense': {
        const x = this.tensor(env, step.x);
        const w = this.tensor(env, step.weight);
        const out = this.output(env, step.out);
        const k = emitDense(
          x.shape,
          w.shape[3],
          step.bias !== undefined,
          step.activation === 'relu',
        );
        await this.launch(k, {
          x: x.buffer.ptr,
          weight: w.buffer.ptr,
          ...(step.bias !== undefined ? { bias: this.tensor(env, step.bias).buffer.ptr } : {}),
          out: out.buffer.ptr,
        });
        return { [step.out]: out };
      }
      case 'merge': {
        const out = this.output(env, step.out);
        const lse = step.lse !== undefined ? this.output(env, step.lse) : null;
        const values: Record<string, bigint> = { out: out.buffer.ptr };
        step.branches.forEach((br, i) => {
          values[`o${i}`] = this.tensor(env, br.out).buffer.ptr;
          values[`l${i}`] = this.tensor(env, br.lse).buffer.ptr;
        });
        if (lse) values.lse = lse.buffer.ptr;
        await this.launch(emitMerge(out.shape, step.branches.length, lse !== null), values);
        return { [step.out]: out, ...(lse && step.lse ? { [step.lse]: lse } : {}) };
      }
      case 'gate': {
        const x = this.tensor(env, step.x);
        const out = this.output(env, step.out);
        const values: Record<string, bigint> = {
          x: x.buffer.ptr,
          weight: this.tensor(env, step.weight).buffer.ptr,
          bias: this.tensor(env, step.bias).buffer.ptr,
          out: out.buffer.ptr,
        };
        step.branches.forEach((br, i) => {
          values[`br${i}`] = this.tensor(env, br).buffer.ptr;
        });
        await this.launch(emitGate(out.shape, x.shape[3], step.branches.length), values);
        return { [step.out]: out };
      }
      case 'subtract':
        return this.subtract(step, env);
      case 'select':
        return { [step.out]: await this.select(step, env) };
      case 'group':
        return { [step.out]: await this.group(step, env) };
      case 'attend':
        return step.groupQ === undefined ? this.attend(step, env) : this.attendGrouped(step, env);
      case 'compressed':
        return this.compressed(step, env);
      default:
        throw new UnsupportedError(
          `cuda: program op '${String((step as { op: unknown }).op)}' is not supported`,
        );
    }
  }

  /** Frees the select plans and captured tensors (the backend unloads the modules). */
  async dispose(): Promise<void> {
    this.disposed = true;
    const plans = [...this.plans.values()].flatMap((m) => [...m.values()]);
    for (const p of plans) for (const b of (await p.catch(() => null))?.buffers ?? []) b.release();
    for (const c of this.captured.values()) for (const b of await c.catch(() => [])) b.release();
    await this.features.dispose();
    this.plans.clear();
    this.captured.clear();
  }

  // ------------------------------------------------------------------ steps

  private async select(step: SelectStep, env: StepEnv<CudaValue>): Promise<CudaSelectionValue> {
    const q = this.tensor(env, step.q);
    const k = this.tensor(env, step.k);
    const plan = await this.selectPlan(step);
    const { spec, blockQ, blockKV } = step;
    const total = plan.rowStart[plan.rowStart.length - 1] as number;
    const owned: DeviceBuffer[] = [];
    try {
      const rowStart = this.alloc(plan.rowStart.byteLength);
      owned.push(rowStart);
      await this.backend.cuda.upload(rowStart, plan.rowStart);
      const kvBlocks = this.alloc(4 * total);
      owned.push(kvBlocks);
      const full = this.alloc(total); // every selected block is partial: the mask applies
      owned.push(full);
      this.backend.cuda.fill(full, 0);
      await this.launch(plan.kernel, {
        ...plan.ptrs,
        q: q.buffer.ptr,
        k: k.buffer.ptr,
        sel_start: rowStart.ptr,
        sel_blocks: kvBlocks.ptr,
      });
      const layout: BlockLayout = {
        seqQ: spec.seqQ,
        seqKV: spec.seqKV,
        blockQ,
        blockKV,
        numQBlocks: ceilDiv(spec.seqQ, blockQ),
        numKVBlocks: ceilDiv(spec.seqKV, blockKV),
        batches: spec.batch,
        heads: spec.headsQ,
        rowStart: plan.rowStart,
        kvBlocks: new Int32Array(0),
        full: new Uint8Array(0),
      };
      return { kind: 'selection', step, layout, rowStart, kvBlocks, full };
    } catch (e) {
      for (const b of owned) b.release();
      throw e;
    }
  }

  /** Candidate layout on the device, score scratch and row starts for one select configuration. */
  private selectPlan(step: SelectStep): Promise<SelectPlan> {
    const key = `${step.blockQ}x${step.blockKV}|${step.topK}|${step.local}`;
    let perSpec = this.plans.get(step.spec);
    if (!perSpec) {
      perSpec = new Map();
      this.plans.set(step.spec, perSpec);
    }
    let plan = perSpec.get(key);
    if (!plan) {
      plan = this.buildSelectPlan(step);
      perSpec.set(key, plan);
      plan.catch(() => perSpec?.delete(key));
    }
    return plan;
  }

  private async buildSelectPlan(step: SelectStep): Promise<SelectPlan> {
    const { spec, blockQ, blockKV, topK } = step;
    const stat = blockLayout(spec, { blockQ, blockKV });
    const nq = stat.numQBlocks;
    const rows = spec.batch * spec.headsQ * nq;
    const rowStart = new Int32Array(rows + 1);
    const scoreBase = new Int32Array(rows + 1);
    for (let b = 0; b < spec.batch; b++) {
      for (let h = 0; h < spec.headsQ; h++) {
        const slice = (stat.batches === 1 ? 0 : b) * stat.heads + (stat.heads === 1 ? 0 : h);
        for (let qb = 0; qb < nq; qb++) {
          const r = (b * spec.headsQ + h) * nq + qb;
          const sr = slice * nq + qb;
          const n = (stat.rowStart[sr + 1] as number) - (stat.rowStart[sr] as number);
          rowStart[r + 1] = (rowStart[r] as number) + Math.min(topK, n);
          scoreBase[r + 1] = (scoreBase[r] as number) + n;
        }
      }
    }
    const buffers: DeviceBuffer[] = [];
    const put = async (data: Int32Array): Promise<DeviceBuffer> => {
      const b = this.alloc(data.byteLength);
      buffers.push(b);
      await this.backend.cuda.upload(b, data);
      return b;
    };
    try {
      const kernel = emitSelect(step, { batches: stat.batches, heads: stat.heads });
      const rs = await put(stat.rowStart);
      const kb = await put(stat.kvBlocks);
      const base = await put(scoreBase);
      const scores = this.alloc(4 * (scoreBase[rows] as number));
      buffers.push(scores);
      return {
        kernel,
        rowStart,
        buffers,
        ptrs: { row_start: rs.ptr, kv_blocks: kb.ptr, score_base: base.ptr, scores: scores.ptr },
      };
    } catch (e) {
      for (const b of buffers) b.release();
      throw e;
    }
  }

  /**
   * Routes every row to its cluster (one thread per row, into a scratch buffer), then sorts each
   * (batch, head) slice stably by cluster (one block per slice) into the grouping's rank / order.
   */
  private async group(step: GroupStep, env: StepEnv<CudaValue>): Promise<CudaGroupingValue> {
    const x = this.tensor(env, step.x);
    const c = this.tensor(env, step.centroids);
    const [B, H, N] = x.shape;
    const C = c.shape[2];
    if (C > GROUP_MAX_CLUSTERS)
      throw new UnsupportedError(
        `cuda: group '${step.out}' has ${C} clusters; at most ${GROUP_MAX_CLUSTERS} are supported`,
      );
    const cluster = this.alloc(4 * B * H * N);
    const owned: DeviceBuffer[] = [];
    try {
      const rank = this.alloc(4 * B * H * N);
      owned.push(rank);
      const order = this.alloc(4 * B * H * N);
      owned.push(order);
      await this.launch(emitGroupRoute(x.shape, C), {
        x: x.buffer.ptr,
        centroids: c.buffer.ptr,
        cluster: cluster.ptr,
      });
      await this.launch(emitGroupSort(N, C, B * H), {
        cluster: cluster.ptr,
        rank: rank.ptr,
        order: order.ptr,
      });
      return { kind: 'grouping', batch: B, heads: H, rows: N, size: step.size, rank, order };
    } catch (e) {
      for (const b of owned) b.release();
      throw e;
    } finally {
      cluster.release(); // ordered after the launches on the default stream
    }
  }

  /**
   * Attend restricted to groups: one warp per query row walks its group's keys in the KV
   * grouping's order, softmax or (linear specs) the linear module's stabilised features. f32 only.
   */
  private async attendGrouped(
    step: AttendStep,
    env: StepEnv<CudaValue>,
  ): Promise<Record<string, CudaValue>> {
    const { spec } = step;
    if (spec.dtype !== 'f32')
      throw new UnsupportedError(
        `cuda: grouped attend '${step.out}' runs f32 specs only (got dtype '${spec.dtype}')`,
      );
    const q = this.tensor(env, step.q);
    const k = this.tensor(env, step.k);
    const v = this.tensor(env, step.v);
    const gq = this.grouping(env, step.groupQ as string);
    const gk = this.grouping(env, step.groupKV as string);
    // The query grouping covers the query heads or (one grouping of the KV heads, e.g. of the
    // keys, serving both sides) the KV heads: query head h then reads its KV head's slice.
    if (
      gq.batch !== spec.batch ||
      gq.rows !== spec.seqQ ||
      (gq.heads !== spec.headsQ && gq.heads !== spec.headsKV)
    )
      throw new InputError(
        `cuda: grouped attend '${step.out}': groupQ '${step.groupQ}' groups [${gq.batch}, ${gq.heads}, ${gq.rows}] rows; want [${spec.batch}, ${spec.headsQ} or ${spec.headsKV}, ${spec.seqQ}]`,
      );
    const linear = spec.kernel.type === 'linear';
    const features = linear ? featureDim(spec) : null;
    if (spec.headDimV > GROUPED_MAX_COLUMNS)
      throw new UnsupportedError(
        `cuda: grouped attend '${step.out}' takes at most ${GROUPED_MAX_COLUMNS} value columns (got ${spec.headDimV})`,
      );
    const temps: DeviceBuffer[] = [];
    return this.withOutputs(env, step, temps, async (outputs) => {
      const inputs: Record<string, bigint> = linear
        ? await this.features.writeFor(spec, `attend '${step.out}'`, q, k, temps)
        : { q: q.buffer.ptr, k: k.buffer.ptr };
      const kernel = emitGroupedAttend(
        {
          batch: spec.batch,
          headsQ: spec.headsQ,
          headsKV: spec.headsKV,
          seqQ: spec.seqQ,
          seqKV: spec.seqKV,
          headDim: spec.headDim,
          headDimV: spec.headDimV,
          causal: spec.mask !== null,
          headsGroupQ: gq.heads,
          sizeQ: gq.size,
          sizeKV: gk.size,
          scale: spec.scale,
          features,
          ...(spec.kernel.type === 'linear' ? { featureMap: spec.kernel.featureMap } : {}),
        },
        step.lse !== undefined,
      );
      await this.launch(kernel, {
        ...inputs,
        v: v.buffer.ptr,
        rank_q: gq.rank.ptr,
        order_kv: gk.order.ptr,
        ...outputs,
      });
    });
  }

  private async subtract(
    step: SubtractStep,
    env: StepEnv<CudaValue>,
  ): Promise<Record<string, CudaValue>> {
    const values: Record<string, bigint> = {
      ow: this.tensor(env, step.whole.out).buffer.ptr,
      lw: this.tensor(env, step.whole.lse).buffer.ptr,
      op: this.tensor(env, step.part.out).buffer.ptr,
      lp: this.tensor(env, step.part.lse).buffer.ptr,
    };
    return this.withOutputs(env, step, [], (outputs) =>
      this.launch(emitSubtract(env.shape(step.out), step.lse !== undefined), {
        ...values,
        ...outputs,
      }),
    );
  }

  private async attend(
    step: AttendStep,
    env: StepEnv<CudaValue>,
  ): Promise<Record<string, CudaValue>> {
    const { spec } = step;
    const inputs = [step.q, step.k, step.v].map((n) => this.tensor(env, n));
    const sel = step.selection === undefined ? null : this.selection(env, step.selection);
    const walk = sel === null ? null : selectedWalk(step, sel);
    if (sel && walk === 'rows') return this.attendRows(step, sel, env);
    const sizes = tensorSizes(spec);
    const half = spec.dtype === 'f32' ? null : spec.dtype;
    const temps: DeviceBuffer[] = [];
    const out = this.output(env, step.out);
    const lse = this.alloc(4 * sizes.lse);
    try {
      // 16-bit specs: the kernels read q, k, v and write out in the spec's dtype.
      const ptrs: bigint[] = [];
      for (const t of inputs) {
        if (!half) {
          ptrs.push(t.buffer.ptr);
          continue;
        }
        const n = elements(t.shape);
        const h = this.alloc(2 * n);
        temps.push(h);
        await this.launch(emitConvert(half, n, true), { src: t.buffer.ptr, dst: h.ptr });
        ptrs.push(h.ptr);
      }
      let outPtr = out.buffer.ptr;
      if (half) {
        const h = this.alloc(2 * sizes.out);
        temps.push(h);
        outPtr = h.ptr;
      }
      const [q, k, v] = ptrs as [bigint, bigint, bigint];
      if (sel && walk && walk !== 'rows')
        await this.attendSelected(step, sel, walk, q, k, v, outPtr, lse.ptr);
      else (await this.backend.prepare(spec)).launch(q, k, v, outPtr, lse.ptr);
      if (half)
        await this.launch(emitConvert(half, sizes.out, false), {
          src: outPtr,
          dst: out.buffer.ptr,
        });
    } catch (e) {
      out.buffer.release();
      lse.release();
      throw e;
    } finally {
      // Later work on the default stream is ordered after these launches, so reuse is safe.
      for (const t of temps) t.release();
    }
    const res: Record<string, CudaValue> = { [step.out]: out };
    if (step.lse !== undefined)
      res[step.lse] = { kind: 'tensor', shape: env.shape(step.lse), buffer: lse };
    else lse.release();
    return res;
  }

  /**
   * The spec's flash kernel at the selection's block shape, walking the selection's layout. A
   * kernel that cannot take the selection's key blocks (the CUDA-core one takes 32 keys) walks
   * the selection expanded on the device into its own key blocks (same keys, see expandSelection).
   */
  private async attendSelected(
    step: AttendStep,
    sel: CudaSelectionValue,
    flash: { module: CudaModuleSource; blockKV: number },
    q: bigint,
    k: bigint,
    v: bigint,
    out: bigint,
    lse: bigint,
  ): Promise<void> {
    const { spec } = step;
    const { module, blockKV } = flash;
    if (spec.batch > 65535 || spec.headsQ > 65535)
      throw new UnsupportedError(
        `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
      );
    const { blockQ } = sel.layout;
    const label = `${spec.hash}-${module.path}-${blockQ}x${blockKV}-selected`;
    const { functions } = await this.backend.loadModule(module, label);
    const entry = module.kernels[0];
    const fn = functions[0];
    if (!entry || fn === undefined) throw new Error('softmax module has no kernel');
    const captured = await this.capturedOf(spec);
    const temps: DeviceBuffer[] = [];
    try {
      const walk =
        blockKV === sel.layout.blockKV ? sel : await this.expandSelection(sel, blockKV, temps);
      const geometry = launchGeometry(spec, module, walk.layout);
      const values: Record<string, bigint | number> = {
        q,
        k,
        v,
        out,
        lse,
        row_start: walk.rowStart.ptr,
        kv_blocks: walk.kvBlocks.ptr,
        full: walk.full.ptr,
        layout_batches: walk.layout.batches,
        layout_heads: walk.layout.heads,
      };
      captured.forEach((b, i) => {
        values[`t${i}`] = b.ptr;
      });
      if (geometry.order) {
        const order = this.alloc(geometry.order.byteLength);
        temps.push(order);
        await this.backend.cuda.upload(order, geometry.order);
        values.q_order = order.ptr;
      }
      const params = packParams(entry.params, values);
      native(() =>
        this.backend.cuda.addon.launch(
          fn,
          geometry.grid,
          [entry.threads, 1, 1],
          entry.dynamicSharedBytes,
          0n,
          params,
        ),
      );
    } finally {
      // Later work on the default stream is ordered after this launch, so reuse is safe.
      for (const t of temps) t.release();
    }
  }

  /**
   * Selected attend for key blocks the flash kernel cannot take (fewer than 32 keys, or not a
   * multiple of 32): one warp per query row walks its query block's selected blocks on the device
   * (emitSelectedRows), with the spec's mask and score pipeline. f32 specs (selectedWalk checks).
   */
  private async attendRows(
    step: AttendStep,
    sel: CudaSelectionValue,
    env: StepEnv<CudaValue>,
  ): Promise<Record<string, CudaValue>> {
    const { spec } = step;
    if (spec.headDimV > SELECTED_ROWS_MAX_COLUMNS)
      throw new UnsupportedError(
        `cuda: attend '${step.out}' on selection '${step.selection}' (blocks ${sel.layout.blockQ}×${sel.layout.blockKV}) takes at most ${SELECTED_ROWS_MAX_COLUMNS} value columns (got ${spec.headDimV})`,
      );
    if (spec.batch > 65535 || spec.headsQ > 65535)
      throw new UnsupportedError(
        `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
      );
    const [q, k, v] = [step.q, step.k, step.v].map((n) => this.tensor(env, n)) as [
      CudaTensorValue,
      CudaTensorValue,
      CudaTensorValue,
    ];
    const { blockQ, blockKV, batches, heads } = sel.layout;
    const kernel = emitSelectedRows(spec, { blockQ, blockKV, batches, heads });
    const captured = await this.capturedOf(spec);
    const out = this.output(env, step.out);
    const lse =
      step.lse !== undefined
        ? this.output(env, step.lse)
        : { buffer: this.alloc(4 * spec.batch * spec.headsQ * spec.seqQ) };
    try {
      const values: Record<string, bigint> = {
        q: q.buffer.ptr,
        k: k.buffer.ptr,
        v: v.buffer.ptr,
        out: out.buffer.ptr,
        lse: lse.buffer.ptr,
        sel_start: sel.rowStart.ptr,
        sel_blocks: sel.kvBlocks.ptr,
      };
      captured.forEach((b, i) => {
        values[`t${i}`] = b.ptr;
      });
      await this.launch(kernel, values);
    } catch (e) {
      out.buffer.release();
      lse.buffer.release();
      throw e;
    }
    if (step.lse === undefined) {
      lse.buffer.release(); // ordered after the launch on the default stream
      return { [step.out]: out };
    }
    return { [step.out]: out, [step.lse]: lse as CudaTensorValue };
  }

  /**
   * `sel` as a selection of `blockKV`-key blocks, built on the device from its entries (they never
   * leave it); buffers go to `temps`. Its host layout's row starts are upper bounds (M × the
   * selection's): the exact ones, less the sub-blocks past the last key, are on the device.
   */
  private async expandSelection(
    sel: CudaSelectionValue,
    blockKV: number,
    temps: DeviceBuffer[],
  ): Promise<Pick<CudaSelectionValue, 'layout' | 'rowStart' | 'kvBlocks' | 'full'>> {
    const l = sel.layout;
    const m = l.blockKV / blockKV;
    const rows = l.rowStart.length - 1;
    const bound = m * (l.rowStart[rows] as number);
    const buffer = (bytes: number): DeviceBuffer => {
      const b = this.alloc(bytes);
      temps.push(b);
      return b;
    };
    const drops = buffer(4 * PROGRAM_THREADS);
    const rowStart = buffer(4 * (rows + 1));
    const kvBlocks = buffer(4 * bound);
    const full = buffer(bound); // partial, as the selection's: the mask applies
    this.backend.cuda.fill(full, 0);
    await this.launch(emitExpandSelection({ rows, blockKV: l.blockKV, seqKV: l.seqKV }, blockKV), {
      sel_start: sel.rowStart.ptr,
      sel_blocks: sel.kvBlocks.ptr,
      drops: drops.ptr,
      out_start: rowStart.ptr,
      out_blocks: kvBlocks.ptr,
    });
    const layout: BlockLayout = {
      ...l,
      blockKV,
      numKVBlocks: ceilDiv(l.seqKV, blockKV),
      rowStart: l.rowStart.map((x) => m * x),
    };
    return { layout, rowStart, kvBlocks, full };
  }

  private async compressed(
    step: CompressedStep,
    env: StepEnv<CudaValue>,
  ): Promise<Record<string, CudaValue>> {
    const q = this.tensor(env, step.q);
    const k = this.tensor(env, step.k);
    const v = this.tensor(env, step.v);
    const sel = step.selection === undefined ? null : this.selection(env, step.selection);
    const temps: DeviceBuffer[] = [];
    return this.withOutputs(env, step, temps, async (outputs) => {
      const inputs: Record<string, bigint> = step.kernel
        ? await this.features.write(step, q, k, temps)
        : { q: q.buffer.ptr, k: k.buffer.ptr };
      const kernel = emitCompressed(
        step,
        q.shape,
        k.shape,
        v.shape[3],
        sel
          ? {
              mode: step.selectionMode ?? 'exclude',
              blockQ: sel.layout.blockQ,
              numQBlocks: sel.layout.numQBlocks,
            }
          : null,
        step.kernel ? featureDim(compressedSpec(step, q.shape, k.shape)) : null,
      );
      await this.launch(kernel, {
        ...inputs,
        v: v.buffer.ptr,
        ...(sel ? { sel_start: sel.rowStart.ptr, sel_blocks: sel.kvBlocks.ptr } : {}),
        ...outputs,
      });
    });
  }

  // ------------------------------------------------------------------ helpers

  private alloc(bytes: number): DeviceBuffer {
    if (this.disposed) throw new InputError('cuda backend used after dispose()');
    return this.backend.cuda.pool.alloc(Math.max(4, bytes));
  }

  private tensor(env: StepEnv<CudaValue>, name: string): CudaTensorValue {
    const v = env.get(name);
    if (v.kind !== 'tensor') throw new InputError(`'${name}' is a ${v.kind}, not a tensor`);
    return v;
  }

  private grouping(env: StepEnv<CudaValue>, name: string): CudaGroupingValue {
    const v = env.get(name);
    if (v.kind !== 'grouping') throw new InputError(`'${name}' is not a grouping`);
    return v;
  }

  private selection(env: StepEnv<CudaValue>, name: string): CudaSelectionValue {
    const v = env.get(name);
    if (v.kind !== 'selection') throw new InputError(`'${name}' is not a selection`);
    return v;
  }

  /** A new f32 tensor for `name` (its shape from the program). */
  /**
   * Allocates a step's `out` (and `lse` when it names one), runs `launch` with their pointers,
   * and returns them; on failure frees them. `temps` are freed either way, after the launch on
   * the default stream.
   */
  private async withOutputs(
    env: StepEnv<CudaValue>,
    step: { readonly out: string; readonly lse?: string },
    temps: DeviceBuffer[],
    launch: (ptrs: Record<string, bigint>) => Promise<void>,
  ): Promise<Record<string, CudaValue>> {
    const out = this.output(env, step.out);
    const lse = step.lse !== undefined ? this.output(env, step.lse) : null;
    try {
      await launch({ out: out.buffer.ptr, ...(lse ? { lse: lse.buffer.ptr } : {}) });
    } catch (e) {
      out.buffer.release();
      lse?.buffer.release();
      throw e;
    } finally {
      for (const t of temps) t.release();
    }
    return { [step.out]: out, ...(lse && step.lse ? { [step.lse]: lse } : {}) };
  }

  private output(env: StepEnv<CudaValue>, name: string): CudaTensorValue {
    const shape = env.shape(name);
    return { kind: 'tensor', shape, buffer: this.alloc(4 * elements(shape)) };
  }

  private capturedOf(spec: AttentionSpec): Promise<DeviceBuffer[]> {
    let c = this.captured.get(spec);
    if (!c) {
      c = (async () => {
        const bs: DeviceBuffer[] = [];
        for (const t of spec.tensors) {
          const b = this.alloc(t.data.byteLength);
          bs.push(b);
          await this.backend.cuda.upload(b, t.data);
        }
        return bs;
      })();
      this.captured.set(spec, c);
    }
    return c;
  }

  /** Compiles (cached), loads and launches a program kernel on the default stream. */
  private async launch(k: ProgramKernel, values: Record<string, bigint | number>): Promise<void> {
    const module: Launchable = { source: k.source, kernels: [k.entry] };
    const { functions } = await this.backend.loadModule(module, k.entry.name);
    const fn = functions[0] as bigint;
    const params = packParams(k.entry.params, values);
    native(() =>
      this.backend.cuda.addon.launch(
        fn,
        k.grid,
        [k.entry.threads, 1, 1],
        k.entry.dynamicSharedBytes,
        0n,
        params,
      ),
    );
  }
}

/**
 * How an attend walks `sel`: a flash module (selectedModule) when one takes the selection's blocks,
 * else, for f32 specs, the per-row kernel ('rows'); a 16-bit spec on such blocks is refused with
 * an UnsupportedError naming the dtype.
 */
function selectedWalk(
  step: AttendStep,
  sel: CudaSelectionValue,
): { module: CudaModuleSource; blockKV: number } | 'rows' {
  try {
    return selectedModule(step, sel);
  } catch (e) {
    if (!(e instanceof UnsupportedError)) throw e;
    if (step.spec.dtype === 'f32') return 'rows';
    throw new UnsupportedError(
      `${e.message}; the per-row kernel for such blocks runs f32 specs only (got dtype '${step.spec.dtype}')`,
    );
  }
}

/**
 * The flash module that walks `sel` for `step`: at the selection's blocks when the kernel takes
 * them, else at the CUDA-core key block when that divides the selection's (the selection is then
 * expanded); otherwise UnsupportedError naming the step, the selection and the blocks.
 */
function selectedModule(
  step: AttendStep,
  sel: CudaSelectionValue,
): { module: CudaModuleSource; blockKV: number } {
  const { blockQ, blockKV } = sel.layout;
  let first: UnsupportedError;
  try {
    return { module: emitCuda(step.spec, { blockQ, blockKV }), blockKV };
  } catch (e) {
    if (!(e instanceof UnsupportedError)) throw e;
    first = e;
  }
  if (blockKV % SIMT_BLOCK_KV === 0) {
    try {
      const module = emitCuda(step.spec, { blockQ, blockKV: SIMT_BLOCK_KV });
      return { module, blockKV: SIMT_BLOCK_KV };
    } catch (e) {
      if (!(e instanceof UnsupportedError)) throw e;
    }
  }
  throw new UnsupportedError(
    `cuda: attend '${step.out}' cannot walk selection '${step.selection}' (blocks ${blockQ}×${blockKV}): ${first.message}`,
  );
}
