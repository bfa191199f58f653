/// <reference types="@webgpu/types" />
/**
 * The WebGPU backend's ProgramOps: every value is an f32 GPU buffer kept on the device; each step
 * records its copies and dispatches into one command encoder and submits it. Nothing is read back
 * between steps. Steps it cannot run raise UnsupportedError (never a CPU fallback).
 */
import {
  type AttendStep,
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  type CompressedStep,
  ceilDiv,
  type GateStep,
  type MergeStep,
  type PoolStep,
  type ProgramOps,
  type ProgramStep,
  type ProjectStep,
  ResourceLimitError,
  type SelectStep,
  type Shape,
  SpecError,
  type StepEnv,
  TesseraError,
  UnsupportedError,
} from '@tessera/core';
import type { PlanContext, ResidentInputs, ResidentOutputs } from '../backend.js';
import { MAP_READ_MODE, Usage } from '../gpu.js';
import { flashOnSelection } from './attend.js';
import { emitCompressed } from './compressed-kernel.js';
import { gridSize } from './grid.js';
import { type Dims, emitDense, emitGate, emitMerge, emitPool, emitProject } from './kernels.js';
import { emitSelect } from './select-kernel.js';
import { elementsOf, type GpuSelection, type GpuTensor, type GpuValue } from './values.js';

const STORAGE = Usage.STORAGE | Usage.COPY_DST | Usage.COPY_SRC;

/** What the backend lends the program ops. */
export interface ProgramHost {
  readonly plan: PlanContext;
  /** Throws once the backend is disposed or its device lost. */
  alive(): void;
  runResident(spec: AttentionSpec, inputs: ResidentInputs): Promise<ResidentOutputs>;
}

/** A selection's layout as read back from the device (tests compare it with the CPU's). */
export interface SelectionLayout {
  readonly rowStart: Int32Array;
  readonly kvBlocks: Int32Array;
  readonly full: Uint8Array;
}

export interface WebGpuProgramOps extends ProgramOps<GpuValue> {
  /** Copies a selection's layout back (for tests and inspection; programs never need it). */
  readSelection(value: GpuValue): Promise<SelectionLayout>;
  /** Frees the cached candidate layouts; the backend calls it on dispose. */
  dispose(): void;
}

const dims = (s: Shape): Dims => ({ batch: s[0], heads: s[1], rows: s[2], cols: s[3] });

/** One step's command encoder, the buffers it allocated and the temporaries it frees after. */
class Recording {
  readonly encoder: GPUCommandEncoder;
  readonly temps: GPUBuffer[] = [];
  /** Every buffer allocated for the step's results (released if the step fails). */
  readonly made: GPUBuffer[] = [];
  constructor(readonly device: GPUDevice) {
    this.encoder = device.createCommandEncoder();
  }
}

export function createProgramOps(host: ProgramHost): WebGpuProgramOps {
  const p = host.plan;
  const device = p.ctx.device;
  const candidateCache = new WeakMap<AttentionSpec, Map<string, GPUBuffer>>();
  const candidateBuffers = new Set<GPUBuffer>();

  const newBuffer = (bytes: number, label: string): GPUBuffer => {
    p.checkBinding(label, bytes);
    return p.pool.acquire(bytes, STORAGE, label);
  };

  const tensorOf = (env: StepEnv<GpuValue>, name: string): GpuTensor => {
    const v = env.get(name);
    if (v.kind !== 'tensor')
      throw new UnsupportedError(`'${name}' is a selection, not a tensor, on WebGPU`);
    return v;
  };
  const selectionOf = (env: StepEnv<GpuValue>, name: string): GpuSelection => {
    const v = env.get(name);
    if (v.kind !== 'selection') throw new UnsupportedError(`'${name}' is not a selection`);
    return v;
  };

  async function dispatch(
    rec: Recording,
    code: string,
    what: string,
    items: number,
    buffers: GPUBuffer[],
  ): Promise<void> {
    const [x, y] = gridSize(items, p.ctx.limits.maxComputeWorkgroupsPerDimension, what);
    const pipeline = await p.pipeline(`program|${code}`, code, 'main');
    const bindGroup = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const pass = rec.encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, 1);
    pass.end();
  }

  /** The tensors back to back in one temporary buffer (bindings are few; branches are many). */
  function concat(rec: Recording, parts: GpuTensor[], label: string): GPUBuffer {
    if (parts.length === 1) return (parts[0] as GpuTensor).buffer;
    const bytes = elementsOf((parts[0] as GpuTensor).shape) * 4;
    const buf = newBuffer(bytes * parts.length, label);
    rec.temps.push(buf);
    parts.forEach((t, i) => {
      rec.encoder.copyBufferToBuffer(t.buffer, 0, buf, i * bytes, bytes);
    });
    return buf;
  }

  const output = (rec: Recording, shape: Shape, label: string): GpuTensor => {
    const buffer = newBuffer(elementsOf(shape) * 4, label);
    rec.made.push(buffer);
    return { kind: 'tensor', shape, buffer };
  };

  function candidates(spec: AttentionSpec, blockQ: number, blockKV: number) {
    const layout = blockLayout(spec, { blockQ, blockKV });
    const key = `${blockQ}x${blockKV}`;
    let perSpec = candidateCache.get(spec);
    if (!perSpec) {
      perSpec = new Map();
      candidateCache.set(spec, perSpec);
    }
    let buffer = perSpec.get(key);
    if (!buffer) {
      const words = new Uint32Array(layout.rowStart.length + layout.kvBlocks.length);
      words.set(layout.rowStart);
      layout.kvBlocks.forEach((j, i) => {
        words[layout.rowStart.length + i] = (j | ((layout.full[i] as number) << 31)) >>> 0;
      });
      p.checkBinding('candidate block layout', words.byteLength);
      buffer = device.createBuffer({
        size: Math.max(16, Math.ceil(words.byteLength / 16) * 16),
        usage: Usage.STORAGE | Usage.COPY_DST,
        label: 'tessera candidate layout',
      });
      device.queue.writeBuffer(buffer, 0, words);
      perSpec.set(key, buffer);
      candidateBuffers.add(buffer);
    }
    return { layout, buffer };
  }

  async function pool(rec: Recording, step: PoolStep, env: StepEnv<GpuValue>) {
    const x = tensorOf(env, step.x);
    const out = output(rec, env.shape(step.out), 'tessera pool');
    const w = step.weights === undefined ? null : tensorOf(env, step.weights);
    const code = emitPool(dims(x.shape), step.block, w !== null);
    const bufs = [x.buffer, out.buffer, ...(w ? [w.buffer] : [])];
    await dispatch(rec, code, 'pool', elementsOf(out.shape), bufs);
    return { [step.out]: out };
  }

  async function project(rec: Recording, step: ProjectStep, env: StepEnv<GpuValue>) {
    const x = tensorOf(env, step.x);
    const m = tensorOf(env, step.matrix);
    const out = output(rec, env.shape(step.out), 'tessera project');
    const code = emitProject(dims(x.shape), m.shape[2]);
    await dispatch(rec, code, 'project', elementsOf(out.shape), [x.buffer, m.buffer, out.buffer]);
    return { [step.out]: out };
  }

  async function dense(
    rec: Recording,
    step: ProgramStep & { op: 'dense' },
    env: StepEnv<GpuValue>,
  ) {
    const x = tensorOf(env, step.x);
    const w = tensorOf(env, step.weight);
    const bias = step.bias === undefined ? null : tensorOf(env, step.bias);
    const out = output(rec, env.shape(step.out), 'tessera dense');
    const code = emitDense(dims(x.shape), w.shape[3], bias !== null, step.activation === 'relu');
    const bufs = [x.buffer, w.buffer, out.buffer, ...(bias ? [bias.buffer] : [])];
    await dispatch(rec, code, 'dense', elementsOf(out.shape), bufs);
    return { [step.out]: out };
  }

  async function gate(rec: Recording, step: GateStep, env: StepEnv<GpuValue>) {
    const x = tensorOf(env, step.x);
    const w = tensorOf(env, step.weight);
    const bias = tensorOf(env, step.bias);
    const branches = step.branches.map((b) => tensorOf(env, b));
    const out = output(rec, env.shape(step.out), 'tessera gate');
    const cat = concat(rec, branches, 'tessera gate branches');
    const code = emitGate(dims(x.shape), out.shape[3], branches.length);
    const bufs = [x.buffer, w.buffer, bias.buffer, cat, out.buffer];
    await dispatch(rec, code, 'gate', elementsOf(out.shape), bufs);
    return { [step.out]: out };
  }

  async function merge(rec: Recording, step: MergeStep, env: StepEnv<GpuValue>) {
    const outs = step.branches.map((b) => tensorOf(env, b.out));
    const lses = step.branches.map((b) => tensorOf(env, b.lse));
    const shape = env.shape(step.out);
    const out = output(rec, shape, 'tessera merge out');
    const lse = output(rec, [shape[0], shape[1], shape[2], 1], 'tessera merge lse');
    const rows = shape[0] * shape[1] * shape[2];
    const code = emitMerge(rows, shape[3], outs.length);
    const bufs = [
      concat(rec, outs, 'tessera merge outs'),
      concat(rec, lses, 'tessera merge lses'),
      out.buffer,
      lse.buffer,
    ];
    await dispatch(rec, code, 'merge', rows, bufs);
    if (step.lse === undefined) rec.temps.push(lse.buffer);
    return { [step.out]: out, ...(step.lse !== undefined ? { [step.lse]: lse } : {}) };
  }

  async function select(rec: Recording, step: SelectStep, env: StepEnv<GpuValue>) {
    const { spec, blockQ, blockKV, topK } = step;
    const q = tensorOf(env, step.q);
    const k = tensorOf(env, step.k);
    const cand = candidates(spec, blockQ, blockKV);
    const stat: BlockLayout = cand.layout;
    const nq = ceilDiv(spec.seqQ, blockQ);
    const nk = ceilDiv(spec.seqKV, blockKV);
    const rows = spec.batch * spec.headsQ * nq;
    const rowStart = new Uint32Array(rows + 1);
    let maxCandidates = 0;
    let r = 0;
    for (let b = 0; b < spec.batch; b++) {
      for (let h = 0; h < spec.headsQ; h++) {
        const slice = (stat.batches === 1 ? 0 : b) * stat.heads + (stat.heads === 1 ? 0 : h);
        for (let qb = 0; qb < nq; qb++, r++) {
          const row = slice * nq + qb;
          const n = (stat.rowStart[row + 1] as number) - (stat.rowStart[row] as number);
          maxCandidates = Math.max(maxCandidates, n);
          rowStart[r + 1] = (rowStart[r] as number) + Math.min(topK, n);
        }
      }
    }
    const entries = rowStart[rows] as number;
    const buffer = newBuffer((rows + 1 + entries) * 4, 'tessera selection');
    rec.made.push(buffer);
    device.queue.writeBuffer(buffer, 0, rowStart);
    const scores = newBuffer(rows * Math.max(1, maxCandidates) * 4, 'tessera selection scores');
    rec.temps.push(scores);
    const code = emitSelect({
      batch: spec.batch,
      headsQ: spec.headsQ,
      headsKV: spec.headsKV,
      headDim: spec.headDim,
      blockQ,
      blockKV,
      numQBlocks: nq,
      numKVBlocks: nk,
      local: step.local,
      candidateBatches: stat.batches,
      candidateHeads: stat.heads,
      candidateEntries: stat.rowStart.length,
      selectionEntries: rows + 1,
      maxCandidates,
    });
    await dispatch(rec, code, 'select', rows, [q.buffer, k.buffer, cand.buffer, buffer, scores]);
    const value: GpuSelection = { kind: 'selection', step, buffer, rows, numQBlocks: nq, entries };
    return { [step.out]: value };
  }

  function checkDtype(where: string, spec: AttentionSpec): void {
    if (spec.dtype !== 'f32')
      throw new UnsupportedError(
        `${where}: WebGPU programs run f32 specs only (the spec's dtype is '${spec.dtype}')`,
      );
  }

  async function attend(rec: Recording, step: AttendStep, env: StepEnv<GpuValue>) {
    const spec = step.spec;
    checkDtype('attend', spec);
    const q = tensorOf(env, step.q);
    const k = tensorOf(env, step.k);
    const v = tensorOf(env, step.v);
    const outShape = env.shape(step.out);
    const lseShape: Shape = [outShape[0], outShape[1], outShape[2], 1];
    let out: GPUBuffer;
    let lse: GPUBuffer;
    if (step.selection !== undefined) {
      const sel = selectionOf(env, step.selection);
      if (spec.kernel.type !== 'softmax')
        throw new UnsupportedError('attend: a selection needs a softmax spec');
      const run = await flashOnSelection(p, spec, q.buffer, k.buffer, v.buffer, sel, newBuffer);
      run.encode(rec.encoder);
      rec.made.push(run.out, run.lse);
      rec.temps.push(...run.temps);
      out = run.out;
      lse = run.lse;
    } else {
      const res = await host.runResident(spec, {
        spec,
        q: q.buffer,
        k: k.buffer,
        v: v.buffer,
        storage: 'f32',
      });
      out = res.out;
      lse = res.lse;
    }
    if (step.lse === undefined) rec.temps.push(lse);
    const res: Record<string, GpuValue> = {
      [step.out]: { kind: 'tensor', shape: outShape, buffer: out },
    };
    if (step.lse !== undefined) res[step.lse] = { kind: 'tensor', shape: lseShape, buffer: lse };
    return res;
  }

  async function compressed(rec: Recording, step: CompressedStep, env: StepEnv<GpuValue>) {
    const q = tensorOf(env, step.q);
    const k = tensorOf(env, step.k);
    const v = tensorOf(env, step.v);
    const sel = step.selection === undefined ? null : selectionOf(env, step.selection);
    if (sel && sel.step.spec.batch !== q.shape[0])
      throw new SpecError(
        `compressed: selection '${step.selection}' was made for batch ${sel.step.spec.batch}, q has ${q.shape[0]}`,
      );
    const shape = env.shape(step.out);
    const out = output(rec, shape, 'tessera compressed out');
    const lse = output(rec, [shape[0], shape[1], shape[2], 1], 'tessera compressed lse');
    const code = emitCompressed({
      batch: q.shape[0],
      heads: q.shape[1],
      headsKV: k.shape[1],
      rows: q.shape[2],
      headDim: q.shape[3],
      cols: v.shape[3],
      block: step.block,
      seqKV: step.seqKV,
      scale: step.scale,
      causal: step.causal,
      ...(sel
        ? {
            selection: {
              mode: step.selectionMode ?? 'exclude',
              blockQ: sel.step.blockQ,
              numQBlocks: sel.numQBlocks,
              entries: sel.rows + 1,
            },
          }
        : {}),
    });
    const bufs = [q.buffer, k.buffer, v.buffer, out.buffer, lse.buffer];
    if (sel) bufs.push(sel.buffer);
    await dispatch(rec, code, 'compressed', shape[0] * shape[1] * shape[2], bufs);
    if (step.lse === undefined) rec.temps.push(lse.buffer);
    return { [step.out]: out, ...(step.lse !== undefined ? { [step.lse]: lse } : {}) };
  }

  async function record(
    rec: Recording,
    step: ProgramStep,
    env: StepEnv<GpuValue>,
  ): Promise<Record<string, GpuValue>> {
    switch (step.op) {
      case 'pool':
        return pool(rec, step, env);
      case 'project':
        return project(rec, step, env);
      case 'dense':
        return dense(rec, step, env);
      case 'gate':
        return gate(rec, step, env);
      case 'merge':
        return merge(rec, step, env);
      case 'select':
        return select(rec, step, env);
      case 'attend':
        return attend(rec, step, env);
      case 'compressed':
        return compressed(rec, step, env);
      default:
        throw new UnsupportedError(
          `WebGPU programs have no op '${String((step as { op?: unknown }).op)}'`,
        );
    }
  }

  async function copyBack(buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    host.alive();
    const size = Math.ceil(bytes / 4) * 4;
    const staging = p.pool.acquire(size, Usage.MAP_READ | Usage.COPY_DST, 'tessera readback');
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(buffer, 0, staging, 0, size);
    device.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(MAP_READ_MODE);
    } catch (cause) {
      host.alive();
      throw cause;
    }
    const data = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    p.pool.release(staging);
    return data;
  }

  return {
    async upload(data, shape) {
      host.alive();
      const bytes = elementsOf(shape) * 4;
      if (data.length * 4 !== bytes)
        throw new SpecError(`upload: ${data.length} elements do not fill shape [${shape}]`);
      p.checkBinding('program input', bytes);
      return { kind: 'tensor', shape, buffer: p.upload(data, 'tessera program input') };
    },
    async download(value) {
      if (value.kind !== 'tensor')
        throw new UnsupportedError('only tensors can be downloaded (a selection stays on the GPU)');
      return new Float32Array(await copyBack(value.buffer, elementsOf(value.shape) * 4));
    },
    async readSelection(value) {
      if (value.kind !== 'selection') throw new UnsupportedError('readSelection needs a selection');
      const words = new Uint32Array(
        await copyBack(value.buffer, (value.rows + 1 + value.entries) * 4),
      );
      const rowStart = Int32Array.from(words.subarray(0, value.rows + 1));
      const raw = words.subarray(value.rows + 1);
      return {
        rowStart,
        kvBlocks: Int32Array.from(raw, (w) => w & 0x7fffffff),
        full: Uint8Array.from(raw, (w) => w >>> 31),
      };
    },
    bytes(value) {
      return value.buffer.size;
    },
    free(value) {
      p.pool.release(value.buffer);
    },
    async step(step, env) {
      host.alive();
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('validation');
      const rec = new Recording(device);
      let written: Record<string, GpuValue> | undefined;
      let failure: unknown;
      try {
        written = await record(rec, step, env);
        device.queue.submit([rec.encoder.finish()]);
      } catch (e) {
        failure = e;
      }
      const validation = await device.popErrorScope();
      const oom = await device.popErrorScope();
      // Later submissions are ordered after this one, so the temporaries may be reused now.
      const ok = failure === undefined && !validation && !oom;
      for (const t of new Set(ok ? rec.temps : [...rec.temps, ...rec.made])) p.pool.release(t);
      if (failure !== undefined) throw failure;
      if (oom) throw new ResourceLimitError(`the device ran out of memory: ${oom.message}`);
      if (validation)
        throw new TesseraError(
          'ERR_WEBGPU',
          `WebGPU validation error in a ${step.op} step: ${validation.message}`,
        );
      return written as Record<string, GpuValue>;
    },
    dispose() {
      for (const b of candidateBuffers) b.destroy();
      candidateBuffers.clear();
    },
  };
}
