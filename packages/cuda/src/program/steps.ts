/** Each program step on the device: resolve inputs, allocate, launch; one handler per step kind. */
import {
  type AttendStep,
  type AttentionSpec,
  type CompressedStep,
  type DenseStep,
  type GateStep,
  type MergeStep,
  type PoolStep,
  type ProjectStep,
  type SubtractStep,
  tensorSizes,
} from '@tessera/core';
import { featureDim, type StepTable } from '@tessera/core/backend';
import type { DeviceBuffer } from '../runtime/device.js';
import { runFlashOnSelection, runRowsOnSelection, selectedWalk } from './attend.js';
import {
  emitConvert,
  emitDense,
  emitGate,
  emitMerge,
  emitPool,
  emitProject,
  emitSubtract,
} from './emit.js';
import { emitCompressed } from './emit-attention.js';
import { compressedSpec, type FeatureWriter } from './features.js';
import { runGroup, runGroupedAttend } from './group.js';
import type { ProgramRunner } from './runner.js';
import { runSelect, type SelectPlans } from './select.js';
import {
  type CudaValue,
  type Env,
  elementsOf,
  selectionOf,
  tensorOf,
  type Written,
} from './values.js';

/** The backend's own kernel for a spec (flash or linear), launched on device pointers. */
export interface SpecKernel {
  launch(q: bigint, k: bigint, v: bigint, out: bigint, lse: bigint): void;
}

export interface StepDeps {
  readonly runner: ProgramRunner;
  readonly selects: SelectPlans;
  readonly features: FeatureWriter;
  /** The backend's kernel for `spec`, lowered, compiled and cached by the backend. */
  prepare(spec: AttentionSpec): Promise<SpecKernel>;
}

async function pool(run: ProgramRunner, step: PoolStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const k = emitPool(x.shape, step.block, step.weights !== undefined);
  const out = run.output(env, step.out);
  await run.launch(k, {
    x: x.buffer.ptr,
    ...(step.weights !== undefined ? { w: tensorOf(env, step.weights).buffer.ptr } : {}),
    out: out.buffer.ptr,
  });
  return { [step.out]: out };
}

async function project(run: ProgramRunner, step: ProjectStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const m = tensorOf(env, step.matrix);
  const out = run.output(env, step.out);
  await run.launch(emitProject(x.shape, m.shape[2]), {
    x: x.buffer.ptr,
    matrix: m.buffer.ptr,
    out: out.buffer.ptr,
  });
  return { [step.out]: out };
}

async function dense(run: ProgramRunner, step: DenseStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const w = tensorOf(env, step.weight);
  const out = run.output(env, step.out);
  const k = emitDense(x.shape, w.shape[3], step.bias !== undefined, step.activation === 'relu');
  await run.launch(k, {
    x: x.buffer.ptr,
    weight: w.buffer.ptr,
    ...(step.bias !== undefined ? { bias: tensorOf(env, step.bias).buffer.ptr } : {}),
    out: out.buffer.ptr,
  });
  return { [step.out]: out };
}

async function gate(run: ProgramRunner, step: GateStep, env: Env): Promise<Written> {
  const x = tensorOf(env, step.x);
  const out = run.output(env, step.out);
  const values: Record<string, bigint> = {
    x: x.buffer.ptr,
    weight: tensorOf(env, step.weight).buffer.ptr,
    bias: tensorOf(env, step.bias).buffer.ptr,
    out: out.buffer.ptr,
  };
  step.branches.forEach((br, i) => {
    values[`br${i}`] = tensorOf(env, br).buffer.ptr;
  });
  await run.launch(emitGate(out.shape, x.shape[3], step.branches.length), values);
  return { [step.out]: out };
}

async function merge(run: ProgramRunner, step: MergeStep, env: Env): Promise<Written> {
  const out = run.output(env, step.out);
  const lse = step.lse !== undefined ? run.output(env, step.lse) : null;
  const values: Record<string, bigint> = { out: out.buffer.ptr };
  step.branches.forEach((br, i) => {
    values[`o${i}`] = tensorOf(env, br.out).buffer.ptr;
    values[`l${i}`] = tensorOf(env, br.lse).buffer.ptr;
  });
  if (lse) values.lse = lse.buffer.ptr;
  await run.launch(emitMerge(out.shape, step.branches.length, lse !== null), values);
  return { [step.out]: out, ...(lse && step.lse ? { [step.lse]: lse } : {}) };
}

async function subtract(run: ProgramRunner, step: SubtractStep, env: Env): Promise<Written> {
  const values: Record<string, bigint> = {
    ow: tensorOf(env, step.whole.out).buffer.ptr,
    lw: tensorOf(env, step.whole.lse).buffer.ptr,
    op: tensorOf(env, step.part.out).buffer.ptr,
    lp: tensorOf(env, step.part.lse).buffer.ptr,
  };
  return run.withOutputs(env, step, [], (outputs) =>
    run.launch(emitSubtract(env.shape(step.out), step.lse !== undefined), {
      ...values,
      ...outputs,
    }),
  );
}

/**
 * An ungrouped attend: the spec's own kernel, or its flash kernel (or the per-row kernel) walking
 * a selection. 16-bit specs read q, k, v and write out in the spec's dtype, converted around it.
 */
async function attend(deps: StepDeps, step: AttendStep, env: Env): Promise<Written> {
  const run = deps.runner;
  const { spec } = step;
  const inputs = [step.q, step.k, step.v].map((n) => tensorOf(env, n));
  const sel = step.selection === undefined ? null : selectionOf(env, step.selection);
  const walk = sel === null ? null : selectedWalk(step, sel);
  if (sel && walk === 'rows') return runRowsOnSelection(run, step, sel, env);
  const sizes = tensorSizes(spec);
  const half = spec.dtype === 'f32' ? null : spec.dtype;
  const temps: DeviceBuffer[] = [];
  const out = run.output(env, step.out);
  const lse = run.alloc(4 * sizes.lse);
  try {
    const ptrs: bigint[] = [];
    for (const t of inputs) {
      if (!half) {
        ptrs.push(t.buffer.ptr);
        continue;
      }
      const n = elementsOf(t.shape);
      const h = run.alloc(2 * n);
      temps.push(h);
      await run.launch(emitConvert(half, n, true), { src: t.buffer.ptr, dst: h.ptr });
      ptrs.push(h.ptr);
    }
    let outPtr = out.buffer.ptr;
    if (half) {
      const h = run.alloc(2 * sizes.out);
      temps.push(h);
      outPtr = h.ptr;
    }
    const [q, k, v] = ptrs as [bigint, bigint, bigint];
    if (sel && walk && walk !== 'rows')
      await runFlashOnSelection(run, step, sel, walk, q, k, v, outPtr, lse.ptr);
    else (await deps.prepare(spec)).launch(q, k, v, outPtr, lse.ptr);
    if (half)
      await run.launch(emitConvert(half, sizes.out, false), {
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
  const res: Written = { [step.out]: out };
  if (step.lse !== undefined)
    res[step.lse] = { kind: 'tensor', shape: env.shape(step.lse), buffer: lse };
  else lse.release();
  return res;
}

async function compressed(deps: StepDeps, step: CompressedStep, env: Env): Promise<Written> {
  const run = deps.runner;
  const q = tensorOf(env, step.q);
  const k = tensorOf(env, step.k);
  const v = tensorOf(env, step.v);
  const sel = step.selection === undefined ? null : selectionOf(env, step.selection);
  const temps: DeviceBuffer[] = [];
  return run.withOutputs(env, step, temps, async (outputs) => {
    const inputs: Record<string, bigint> = step.kernel
      ? await deps.features.write(step, q, k, temps)
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
    await run.launch(kernel, {
      ...inputs,
      v: v.buffer.ptr,
      ...(sel ? { sel_start: sel.rowStart.ptr, sel_blocks: sel.kvBlocks.ptr } : {}),
      ...outputs,
    });
  });
}

/** The CUDA handler of every program step kind. */
export function stepTable(deps: StepDeps): StepTable<CudaValue> {
  const run = deps.runner;
  return {
    pool: (step, env) => pool(run, step, env),
    project: (step, env) => project(run, step, env),
    dense: (step, env) => dense(run, step, env),
    gate: (step, env) => gate(run, step, env),
    merge: (step, env) => merge(run, step, env),
    select: async (step, env) => ({
      [step.out]: await runSelect(
        run,
        step,
        tensorOf(env, step.q),
        tensorOf(env, step.k),
        deps.selects,
      ),
    }),
    attend: (step, env) =>
      step.groupQ === undefined
        ? attend(deps, step, env)
        : runGroupedAttend(run, deps.features, step, env),
    compressed: (step, env) => compressed(deps, step, env),
    group: async (step, env) => ({
      [step.out]: await runGroup(run, step, tensorOf(env, step.x), tensorOf(env, step.centroids)),
    }),
    subtract: (step, env) => subtract(run, step, env),
  };
}
