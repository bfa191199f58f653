import type {
  AttentionBackend,
  AttentionInputs,
  AttentionOutputs,
  AttentionSpec,
  RunOptions,
} from '@tessera/core';
import type { ConformanceCase, Tolerance } from './types.js';

/** What a case is compared against: a backend (usually cpu) or a function computing outputs. */
export type Reference =
  | AttentionBackend
  | ((
      spec: AttentionSpec,
      inputs: AttentionInputs,
    ) => Promise<AttentionOutputs> | AttentionOutputs);

export interface Comparison {
  /** ‖out − ref‖₂ / ‖ref‖₂ (‖out‖₂ when the reference is all zeros). */
  readonly relErr: number;
  readonly maxAbsErr: number;
  /** max |lse − ref| / max(1, |ref|) over rows finite in both. */
  readonly lseErr: number;
  /** Rows fully masked (lse = -Infinity) in one output but not the other. */
  readonly maskedRowMismatches: number;
  /** NaN or ±Infinity in out, NaN or +Infinity in lse. */
  readonly nonFinite: number;
  /** Output lengths differ from the reference's. */
  readonly shapeMismatch: boolean;
  readonly pass: boolean;
  /** One line saying what failed ('' when it passed). */
  readonly message: string;
}

export interface CaseResult extends Comparison {
  readonly id: string;
  readonly summary: string;
  readonly tolerance: Tolerance;
  readonly backendMs: number;
  readonly referenceMs: number;
}

/** Compares outputs with a reference under a tolerance (see Tolerance). */
export function compareOutputs(
  got: AttentionOutputs,
  ref: AttentionOutputs,
  tolerance: Tolerance,
): Comparison {
  const shapeMismatch = got.out.length !== ref.out.length || got.lse.length !== ref.lse.length;
  let nonFinite = 0;
  for (const x of got.out) if (!Number.isFinite(x)) nonFinite++;
  for (const x of got.lse) if (Number.isNaN(x) || x === Number.POSITIVE_INFINITY) nonFinite++;
  let num = 0;
  let den = 0;
  let maxAbsErr = 0;
  const n = Math.min(got.out.length, ref.out.length);
  for (let i = 0; i < n; i++) {
    const d = got.out[i] - ref.out[i];
    num += d * d;
    den += ref.out[i] * ref.out[i];
    if (!(Math.abs(d) <= maxAbsErr)) maxAbsErr = Math.abs(d);
  }
  const relErr = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  let lseErr = 0;
  let maskedRowMismatches = 0;
  let firstMismatch = -1;
  for (let i = 0; i < Math.min(got.lse.length, ref.lse.length); i++) {
    const g = got.lse[i];
    const r = ref.lse[i];
    const gm = g === Number.NEGATIVE_INFINITY;
    const rm = r === Number.NEGATIVE_INFINITY;
    if (gm !== rm) {
      maskedRowMismatches++;
      if (firstMismatch < 0) firstMismatch = i;
      continue;
    }
    if (gm) continue;
    const e = Math.abs(g - r) / Math.max(1, Math.abs(r));
    if (!(e <= lseErr)) lseErr = e;
  }
  const problems: string[] = [];
  if (shapeMismatch) {
    problems.push(
      `output lengths ${got.out.length}/${got.lse.length}, expected ${ref.out.length}/${ref.lse.length}`,
    );
  }
  if (nonFinite > 0) problems.push(`${nonFinite} non-finite values`);
  if (maskedRowMismatches > 0) {
    problems.push(
      `${maskedRowMismatches} rows disagree on being fully masked (first: row ${firstMismatch}, lse ${got.lse[firstMismatch]} vs ${ref.lse[firstMismatch]})`,
    );
  }
  if (!(relErr <= tolerance.out))
    problems.push(`out relative error ${relErr.toExponential(2)} > ${tolerance.out}`);
  if (!(lseErr <= tolerance.lse))
    problems.push(`lse error ${lseErr.toExponential(2)} > ${tolerance.lse}`);
  return {
    relErr,
    maxAbsErr,
    lseErr,
    maskedRowMismatches,
    nonFinite,
    shapeMismatch,
    pass: problems.length === 0,
    message: problems.join('; '),
  };
}

export interface RunCaseOptions {
  /** Options for the backend under test (e.g. { strategy: 'naive' }). */
  readonly runOptions?: RunOptions;
  /** Options for a reference backend. */
  readonly referenceOptions?: RunOptions;
}

/** Builds a case, runs it on `backend` and on `reference`, and compares. */
export async function runCase(
  backend: AttentionBackend,
  c: ConformanceCase,
  reference: Reference,
  options: RunCaseOptions = {},
): Promise<CaseResult> {
  const { spec, inputs } = c.build();
  let t = performance.now();
  const got = await backend.run(spec, inputs, options.runOptions);
  const backendMs = performance.now() - t;
  t = performance.now();
  const ref =
    typeof reference === 'function'
      ? await reference(spec, inputs)
      : await reference.run(spec, inputs, options.referenceOptions);
  const referenceMs = performance.now() - t;
  return {
    id: c.id,
    summary: c.summary,
    tolerance: c.tolerance,
    backendMs,
    referenceMs,
    ...compareOutputs(got, ref, c.tolerance),
  };
}
