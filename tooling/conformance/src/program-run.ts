// Running a program case on a backend and on a reference, and comparing the two.
import {
  type DeviceValue,
  type Program,
  type ProgramBackend,
  type ProgramOps,
  runProgram,
  type Shape,
} from '@tessera/core';
import { type StepEnv, stepWrites } from '@tessera/core/backend';
import type { DiscreteValue, ProgramCase, ProgramCaseBuild } from './programs.js';

/** Reads a selection or grouping a backend made (its layout entries, or its rank and order). */
export type InspectValue = (value: unknown) => Promise<DiscreteValue> | DiscreteValue;

/** What a function reference returns: the outputs, and the selections/groupings asked for. */
export interface ProgramReferenceResult {
  readonly outputs: Readonly<Record<string, Float32Array>>;
  readonly discrete: Readonly<Record<string, DiscreteValue>>;
}

/**
 * A backend that runs programs (inspected with `referenceInspect`, default: cpu's values), or a
 * function computing the outputs and the named selections/groupings from the host inputs.
 */
export type ProgramReference =
  | ProgramBackend
  | ((
      program: Program,
      inputs: Readonly<Record<string, Float32Array>>,
      exact: readonly string[],
    ) => ProgramReferenceResult | Promise<ProgramReferenceResult>);

export interface RunProgramCaseOptions {
  /**
   * Reads the backend's selections and groupings, so the case's `exact` names are compared
   * entry for entry. Without it only the outputs are compared (`exactCompared` says so).
   */
  readonly inspect?: InspectValue;
  /** Reads the reference backend's; default: cpu's `{ layout }` and `{ grouping }` values. */
  readonly referenceInspect?: InspectValue;
}

export interface ProgramCaseResult {
  readonly pass: boolean;
  /** Worst elementwise error as a multiple of the tolerance (Infinity on a −∞/NaN mismatch). */
  readonly worst: number;
  /** Names compared exactly (selections, groupings); empty when the backend was not inspected. */
  readonly exactCompared: readonly string[];
  readonly message: string;
  readonly backendMs: number;
  readonly referenceMs: number;
}

/** The cpu backend's selections and groupings (`CpuValue`), read without importing its types. */
export const inspectCpuValue: InspectValue = (value) => {
  const v = value as {
    kind?: string;
    layout?: { rowStart: Int32Array; kvBlocks: Int32Array };
    grouping?: { rank: Int32Array; order: Int32Array };
  };
  if (v.kind === 'selection' && v.layout)
    return { kind: 'selection', rowStart: v.layout.rowStart, kvBlocks: v.layout.kvBlocks };
  if (v.kind === 'grouping' && v.grouping)
    return { kind: 'grouping', rank: v.grouping.rank, order: v.grouping.order };
  throw new Error(`inspectCpuValue: not a cpu selection or grouping (kind '${String(v.kind)}')`);
};

/**
 * Runs the first `count` steps of `program` through `ops` directly (no input validation, every
 * value kept), downloads `outputs` and inspects `exact`, then frees everything it made.
 */
async function runSteps(
  ops: ProgramOps,
  program: Program,
  inputs: Readonly<Record<string, Float32Array>>,
  count: number,
  outputs: readonly string[],
  exact: readonly string[],
  inspect: InspectValue | undefined,
): Promise<ProgramReferenceResult> {
  const values = new Map<string, unknown>();
  try {
    for (const [name, shape] of Object.entries(program.inputs))
      values.set(name, await ops.upload(inputs[name] as Float32Array, shape));
    const env: StepEnv<unknown> = {
      get: (name) => {
        const v = values.get(name);
        if (v === undefined) throw new Error(`value '${name}' is not available`);
        return v;
      },
      shape: (name) => program.shapes[name] as Shape,
    };
    for (const step of program.steps.slice(0, count)) {
      for (const [name, v] of Object.entries(await ops.step(step, env))) values.set(name, v);
    }
    const out: Record<string, Float32Array> = {};
    for (const name of outputs) out[name] = await ops.download(env.get(name));
    const discrete: Record<string, DiscreteValue> = {};
    if (inspect) for (const name of exact) discrete[name] = await inspect(env.get(name));
    return { outputs: out, discrete };
  } finally {
    for (const v of values.values()) ops.free(v);
  }
}

/** Steps up to and including the last one that writes one of `names`. */
function prefixLength(program: Program, names: readonly string[]): number {
  let last = 0;
  program.steps.forEach((s, i) => {
    if (stepWrites(s).some((n) => names.includes(n))) last = i + 1;
  });
  return last;
}

interface SideResult {
  outputs: Record<string, Float32Array>;
  discrete: Record<string, DiscreteValue>;
  next?: Record<string, Float32Array>;
}

/** Runs a built case on a backend: outputs by runProgram, discrete values by the steps alone. */
async function runOnBackend(
  backend: ProgramBackend,
  built: ProgramCaseBuild,
  inspect: InspectValue | undefined,
): Promise<SideResult> {
  const ops = backend.program;
  if (!ops) throw new Error(`backend '${backend.name}' does not run programs`);
  const { program, inputs, exact } = built;
  if (built.direct) {
    const r = await runSteps(
      ops,
      program,
      inputs,
      program.steps.length,
      program.outputs,
      exact,
      inspect,
    );
    return { outputs: { ...r.outputs }, discrete: { ...r.discrete } };
  }
  const keep = built.next ? [...new Set(Object.values(built.next.kept))] : [];
  const first = await runProgram(backend, program, inputs, keep.length > 0 ? { keep } : {});
  const res: SideResult = { outputs: { ...first.outputs }, discrete: {} };
  if (built.next) {
    const kept: Record<string, DeviceValue> = {};
    for (const [input, name] of Object.entries(built.next.kept))
      kept[input] = first.kept[name] as DeviceValue;
    try {
      const second = await runProgram(backend, built.next.program, {
        ...built.next.inputs,
        ...kept,
      });
      res.next = { ...second.outputs };
    } finally {
      for (const v of Object.values(first.kept)) v.release();
    }
    // A released value is refused, not read.
    const refused = await runProgram(backend, built.next.program, { ...built.next.inputs, ...kept })
      .then(() => false)
      .catch(() => true);
    if (!refused) throw new Error('a run with a released DeviceValue was not refused');
  }
  if (exact.length > 0 && inspect) {
    const r = await runSteps(
      ops,
      program,
      inputs,
      prefixLength(program, exact),
      [],
      exact,
      inspect,
    );
    res.discrete = { ...r.discrete };
  }
  return res;
}

async function runOnReference(
  reference: ProgramReference,
  built: ProgramCaseBuild,
  inspect: InspectValue,
): Promise<SideResult> {
  if (typeof reference !== 'function') return runOnBackend(reference, built, inspect);
  const r = await reference(built.program, built.inputs, built.exact);
  const res: SideResult = { outputs: { ...r.outputs }, discrete: { ...r.discrete } };
  if (built.next) {
    const host: Record<string, Float32Array> = { ...built.next.inputs };
    for (const [input, name] of Object.entries(built.next.kept))
      host[input] = r.outputs[name] as Float32Array;
    res.next = { ...(await reference(built.next.program, host, [])).outputs };
  }
  return res;
}

/** Compares one output elementwise; returns the worst error ratio and the first problems. */
function compareOutput(
  name: string,
  got: Float32Array | undefined,
  want: Float32Array,
  tolerance: number,
  problems: string[],
): number {
  if (!got) {
    problems.push(`output '${name}' missing`);
    return Number.POSITIVE_INFINITY;
  }
  if (got.length !== want.length) {
    problems.push(`${name}: ${got.length} values, want ${want.length}`);
    return Number.POSITIVE_INFINITY;
  }
  let worst = 0;
  let bad = 0;
  for (let i = 0; i < want.length; i++) {
    const a = got[i] as number;
    const b = want[i] as number;
    if (a === b) continue;
    let e: number;
    if (!Number.isFinite(a) || !Number.isFinite(b)) e = Number.POSITIVE_INFINITY;
    else e = Math.abs(a - b) / (tolerance * (1 + Math.abs(b)));
    if (Number.isNaN(e)) e = Number.POSITIVE_INFINITY;
    worst = Math.max(worst, e);
    if (e > 1 && bad++ < 3) problems.push(`${name}[${i}] = ${a}, want ${b}`);
  }
  if (bad > 3) problems.push(`${name}: ${bad} values out of tolerance`);
  return worst;
}

function firstDifference(a: Int32Array, b: Int32Array): string | null {
  if (a.length !== b.length) return `${a.length} entries, want ${b.length}`;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `[${i}] = ${a[i]}, want ${b[i]}`;
  return null;
}

function compareDiscrete(name: string, got: DiscreteValue, want: DiscreteValue): string | null {
  if (got.kind !== want.kind) return `${name}: a ${got.kind}, want a ${want.kind}`;
  const pairs: [string, Int32Array, Int32Array][] =
    got.kind === 'selection' && want.kind === 'selection'
      ? [
          ['rowStart', got.rowStart, want.rowStart],
          ['kvBlocks', got.kvBlocks, want.kvBlocks],
        ]
      : got.kind === 'grouping' && want.kind === 'grouping'
        ? [
            ['rank', got.rank, want.rank],
            ['order', got.order, want.order],
          ]
        : [];
  for (const [field, a, b] of pairs) {
    const d = firstDifference(a, b);
    if (d) return `${name}.${field}${d.startsWith('[') ? '' : ': '}${d}`;
  }
  return null;
}

/**
 * Builds `c` once and runs it on `backend` and on `reference`: every output within the case's
 * tolerance (−∞ exactly), the `exact` selections and groupings entry for entry (when `inspect`
 * is given), and for `keep` cases the second program fed with the first's kept device values.
 */
export async function runProgramCase(
  backend: ProgramBackend,
  c: ProgramCase,
  reference: ProgramReference,
  options: RunProgramCaseOptions = {},
): Promise<ProgramCaseResult> {
  const built = c.build();
  const t0 = performance.now();
  const got = await runOnBackend(backend, built, options.inspect);
  const t1 = performance.now();
  const want = await runOnReference(reference, built, options.referenceInspect ?? inspectCpuValue);
  const t2 = performance.now();
  const problems: string[] = [];
  let worst = 0;
  for (const name of built.program.outputs)
    worst = Math.max(
      worst,
      compareOutput(
        name,
        got.outputs[name],
        want.outputs[name] as Float32Array,
        c.tolerance,
        problems,
      ),
    );
  if (built.next && want.next) {
    for (const name of built.next.program.outputs)
      worst = Math.max(
        worst,
        compareOutput(
          `next.${name}`,
          got.next?.[name],
          want.next[name] as Float32Array,
          c.tolerance,
          problems,
        ),
      );
  }
  const exactCompared: string[] = [];
  if (options.inspect) {
    for (const name of built.exact) {
      const g = got.discrete[name];
      const w = want.discrete[name];
      if (!g || !w) {
        problems.push(`${name}: not inspected on ${g ? 'the reference' : 'the backend'}`);
        continue;
      }
      const d = compareDiscrete(name, g, w);
      if (d) problems.push(d);
      exactCompared.push(name);
    }
  }
  const pass = problems.length === 0;
  const exactNote = exactCompared.length > 0 ? `; ${exactCompared.join(', ')} exact` : '';
  return {
    pass,
    worst,
    exactCompared,
    message: pass
      ? `worst ${worst.toPrecision(2)}× tolerance ${c.tolerance}${exactNote}`
      : problems.slice(0, 6).join('; '),
    backendMs: t1 - t0,
    referenceMs: t2 - t1,
  };
}
