/// <reference types="@webgpu/types" preserve="true" />
/** Each program step recorded into one command encoder: resolve inputs, allocate, dispatch. */
import type {
  AttendStep,
  AttentionSpec,
  CompressedStep,
  DenseStep,
  GateStep,
  GroupStep,
  MergeStep,
  PoolStep,
  ProgramStep,
  ProjectStep,
  Shape,
  SubtractStep,
} from '@tessera/core';
import { SpecError, UnsupportedError } from '@tessera/core';
import type { StepEnv } from '@tessera/core/backend';
import { dispatchStep, type StepTable } from '@tessera/core/backend';
import type { ResidentInputs, ResidentOutputs } from '../context.js';
import { recordFlashOnSelection } from './attend.js';
import { featureMapPlan } from './compressed-features.js';
import { emitCompressed } from './compressed-kernel.js';
import { recordKeyFeatures } from './features-pass.js';
import { recordGroup, recordGroupedAttend } from './group.js';
import {
  type Dims,
  emitDense,
  emitGate,
  emitMerge,
  emitPool,
  emitProject,
  emitSubtract,
} from './kernels.js';
import { Recording } from './recording.js';
import { emitRound } from './round-kernel.js';
import { type CandidateLayouts, recordSelect } from './select.js';
import {
  elementsOf,
  type GpuGrouping,
  type GpuSelection,
  type GpuTensor,
  type GpuValue,
} from './values.js';

export interface StepDeps {
  readonly candidates: CandidateLayouts;
  /** The backend's own attention run on resident buffers (submits by itself). */
  runResident(spec: AttentionSpec, inputs: ResidentInputs): Promise<ResidentOutputs>;
}

type Env = StepEnv<GpuValue>;
type Written = Record<string, GpuValue>;

const dims = (s: Shape): Dims => ({ batch: s[0], heads: s[1], rows: s[2], cols: s[3] });
const rowsOf = (s: Shape): Shape => [s[0], s[1], s[2], 1];

function tensorOf(env: Env, name: string): GpuTensor {
  const v = env.get(name);
  if (v.kind !== 'tensor') throw new UnsupportedError(`'${name}' is a ${v.kind}, not a tensor`);
  return v;
}

function selectionOf(env: Env, name: string): GpuSelection {
  const v = env.get(name);
  if (v.kind !== 'selection') throw new UnsupportedError(`'${name}' is not a selection`);
  return v;
}

function groupingOf(env: Env, name: string): GpuGrouping {
  const v = env.get(name);
  if (v.kind !== 'grouping') throw new UnsupportedError(`'${name}' is not a grouping`);
  return v;
}

/** out plus, when the step names one, lse; an unnamed lse is a temporary. */
function withLse(rec: Recording, out: string, lse: string | undefined, o: GpuTensor, l: GpuTensor) {
  if (lse === undefined) {
    rec.temps.push(l.buffer);
    return { [out]: o };
  }
  return { [out]: o, [lse]: l };
}

async function pool(rec: Recording, step: PoolStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const w = step.weights === undefined ? null : tensorOf(env, step.weights);
  const out = rec.output(env.shape(step.out), 'tessera pool');
  const code = emitPool(dims(x.shape), step.block, w !== null);
  const bufs = [x.buffer, out.buffer, ...(w ? [w.buffer] : [])];
  await rec.dispatch(code, 'pool', elementsOf(out.shape), bufs);
  return { [step.out]: out };
}

async function project(rec: Recording, step: ProjectStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const m = tensorOf(env, step.matrix);
  const out = rec.output(env.shape(step.out), 'tessera project');
  const code = emitProject(dims(x.shape), m.shape[2]);
  await rec.dispatch(code, 'project', elementsOf(out.shape), [x.buffer, m.buffer, out.buffer]);
  return { [step.out]: out };
}

async function dense(rec: Recording, step: DenseStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const w = tensorOf(env, step.weight);
  const bias = step.bias === undefined ? null : tensorOf(env, step.bias);
  const out = rec.output(env.shape(step.out), 'tessera dense');
  const code = emitDense(dims(x.shape), w.shape[3], bias !== null, step.activation === 'relu');
  const bufs = [x.buffer, w.buffer, out.buffer, ...(bias ? [bias.buffer] : [])];
  await rec.dispatch(code, 'dense', elementsOf(out.shape), bufs);
  return { [step.out]: out };
}

async function gate(rec: Recording, step: GateStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const w = tensorOf(env, step.weight);
  const bias = tensorOf(env, step.bias);
  const branches = step.branches.map((b) => tensorOf(env, b));
  const out = rec.output(env.shape(step.out), 'tessera gate');
  const cat = rec.concat(branches, 'tessera gate branches');
  const code = emitGate(dims(x.shape), out.shape[3], branches.length);
  const bufs = [x.buffer, w.buffer, bias.buffer, cat, out.buffer];
  await rec.dispatch(code, 'gate', elementsOf(out.shape), bufs);
  return { [step.out]: out };
}

async function merge(rec: Recording, step: MergeStep, env: Env): Promise<Written> {
  const outs = step.branches.map((b) => tensorOf(env, b.out));
  const lses = step.branches.map((b) => tensorOf(env, b.lse));
  const shape = env.shape(step.out);
  const out = rec.output(shape, 'tessera merge out');
  const lse = rec.output(rowsOf(shape), 'tessera merge lse');
  const rows = shape[0] * shape[1] * shape[2];
  const bufs = [
    rec.concat(outs, 'tessera merge outs'),
    rec.concat(lses, 'tessera merge lses'),
    out.buffer,
    lse.buffer,
  ];
  await rec.dispatch(emitMerge(rows, shape[3], outs.length), 'merge', rows, bufs);
  return withLse(rec, step.out, step.lse, out, lse);
}

async function subtract(rec: Recording, step: SubtractStep, env: Env): Promise<Written> {
  const shape = env.shape(step.out);
  const out = rec.output(shape, 'tessera subtract out');
  const lse = rec.output(rowsOf(shape), 'tessera subtract lse');
  const rows = shape[0] * shape[1] * shape[2];
  const bufs = [
    tensorOf(env, step.whole.out).buffer,
    tensorOf(env, step.whole.lse).buffer,
    tensorOf(env, step.part.out).buffer,
    tensorOf(env, step.part.lse).buffer,
    out.buffer,
    lse.buffer,
  ];
  await rec.dispatch(emitSubtract(rows, shape[3]), 'subtract', rows, bufs);
  return withLse(rec, step.out, step.lse, out, lse);
}

async function group(rec: Recording, step: GroupStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const centroids = tensorOf(env, step.centroids);
  return { [step.out]: await recordGroup(rec, step, x, centroids) };
}

/**
 * q, k, v rounded to an f16/bf16 spec's dtype (as the CPU reference rounds them), recorded and
 * submitted at once so that the backend's own runs, which submit by themselves, see them.
 */
async function rounded(rec: Recording, spec: AttentionSpec, xs: GpuTensor[]): Promise<GpuTensor[]> {
  if (spec.dtype === 'f32') return xs;
  const dtype = spec.dtype;
  const pre = new Recording(rec.plan);
  const out: GpuTensor[] = [];
  for (const x of xs) {
    const n = elementsOf(x.shape);
    const r: GpuTensor = {
      kind: 'tensor',
      shape: x.shape,
      buffer: pre.buffer(n * 4, 'tessera rounded'),
    };
    rec.temps.push(r.buffer);
    await pre.dispatch(emitRound(n, dtype), `round to ${dtype}`, n, [x.buffer, r.buffer]);
    out.push(r);
  }
  rec.plan.ctx.device.queue.submit([pre.encoder.finish()]);
  return out;
}

async function attend(rec: Recording, step: AttendStep, env: Env, deps: StepDeps) {
  const spec = step.spec;
  const grouped = step.groupQ !== undefined || step.groupKV !== undefined;
  const given = [tensorOf(env, step.q), tensorOf(env, step.k), tensorOf(env, step.v)];
  const [q, k, v] = (grouped ? given : await rounded(rec, spec, given)) as [
    GpuTensor,
    GpuTensor,
    GpuTensor,
  ];
  const shape = env.shape(step.out);
  let res: { out: GPUBuffer; lse: GPUBuffer };
  if (step.groupQ !== undefined || step.groupKV !== undefined) {
    // q, k, v as given, whatever the spec's dtype (as the CPU reference's grouped attend).
    res = await recordGroupedAttend(
      rec,
      spec,
      q,
      k,
      v,
      groupingOf(env, step.groupQ ?? ''),
      groupingOf(env, step.groupKV ?? ''),
    );
  } else if (step.selection !== undefined) {
    const sel = selectionOf(env, step.selection);
    if (spec.kernel.type !== 'softmax')
      throw new UnsupportedError('attend: a selection needs a softmax spec');
    res = await recordFlashOnSelection(rec, spec, q.buffer, k.buffer, v.buffer, sel);
  } else {
    const inputs = { spec, q: q.buffer, k: k.buffer, v: v.buffer, storage: 'f32' } as const;
    res = await deps.runResident(spec, inputs);
  }
  const out: GpuTensor = { kind: 'tensor', shape, buffer: res.out };
  const lse: GpuTensor = { kind: 'tensor', shape: rowsOf(shape), buffer: res.lse };
  return withLse(rec, step.out, step.lse, out, lse);
}

async function compressed(rec: Recording, step: CompressedStep, env: Env): Promise<Written> {
  const [q, k, v] = [tensorOf(env, step.q), tensorOf(env, step.k), tensorOf(env, step.v)];
  const sel = step.selection === undefined ? null : selectionOf(env, step.selection);
  if (sel && sel.step.spec.batch !== q.shape[0])
    throw new SpecError(
      `compressed: selection '${step.selection}' was made for batch ${sel.step.spec.batch}, q has ${q.shape[0]}`,
    );
  const shape = env.shape(step.out);
  const features = step.kernel
    ? await recordKeyFeatures(rec, featureMapPlan(step, k.shape[3]), k, {
        buffer: "tessera compressed's summary features",
        kernel: 'compressed summary features',
      })
    : null;
  const out = rec.output(shape, 'tessera compressed out');
  const lse = rec.output(rowsOf(shape), 'tessera compressed lse');
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
    skipOwnBlock: step.skipOwnBlock === true,
    ...(features ? { features: features.layout } : {}),
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
  const bufs = [q.buffer, features?.work ?? k.buffer, v.buffer, out.buffer, lse.buffer];
  if (sel) bufs.push(sel.buffer);
  await rec.dispatch(code, 'compressed', shape[0] * shape[1] * shape[2], bufs);
  return withLse(rec, step.out, step.lse, out, lse);
}

/** The WebGPU handler of every program step kind, recording into `rec`. */
function stepTable(rec: Recording, deps: StepDeps): StepTable<GpuValue> {
  return {
    pool: async (step, env) => pool(rec, step, env),
    project: async (step, env) => project(rec, step, env),
    dense: async (step, env) => dense(rec, step, env),
    gate: async (step, env) => gate(rec, step, env),
    merge: async (step, env) => merge(rec, step, env),
    select: async (step, env) => ({
      [step.out]: await recordSelect(
        rec,
        step,
        tensorOf(env, step.q),
        tensorOf(env, step.k),
        deps.candidates,
      ),
    }),
    attend: (step, env) => attend(rec, step, env, deps),
    compressed: (step, env) => compressed(rec, step, env),
    group: (step, env) => group(rec, step, env),
    subtract: async (step, env) => subtract(rec, step, env),
  };
}

export function recordStep(
  rec: Recording,
  step: ProgramStep,
  env: Env,
  deps: StepDeps,
): Promise<Written> {
  return dispatchStep(stepTable(rec, deps), step, env);
}
