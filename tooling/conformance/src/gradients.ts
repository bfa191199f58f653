// The gradient half of the catalogue: every forward case, with a seeded dOut and the cpu forward's
// out and lse, so that a backend's backward and the reference's receive identical inputs.
import {
  type AttentionBackend,
  type AttentionGradients,
  type AttentionSpec,
  type BackwardInputs,
  type Dtype,
  elementIndex,
  type RunOptions,
  roundToDtype,
  tensorSizes,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { conformanceCases } from './cases.js';
import { seededValues, seedOf } from './inputs.js';
import type { CatalogueOptions, ConformanceCase, GradientTolerance } from './types.js';

/** One gradient case: a forward case and what its backward needs. */
export interface GradientCase {
  /** The forward case's id (skip lists name both halves alike). */
  readonly id: string;
  readonly tags: readonly string[];
  readonly summary: string;
  readonly dtype: Dtype;
  /** The forward case's `work` (a backward costs about 2.5× it). */
  readonly work: number;
  readonly tolerance: GradientTolerance;
  /** The forward case it extends. */
  readonly forward: ConformanceCase;
  /**
   * The spec and complete backward inputs: the forward case's q, k, v; `out` and `lse` from the
   * cpu backend's forward (computed here, once per call); `dOut` seeded from the case id, uniform
   * in [-1, 1). On f16/bf16 specs `out` and `dOut` are rounded to the dtype, so a backend that
   * stores them in the dtype sees the same numbers as one that does not.
   */
  build(): Promise<{ spec: AttentionSpec; inputs: BackwardInputs }>;
}

/** The dOut stream of a case's seed (q, k, v use streams 0–2). */
const DOUT_STREAM = 3;

let forwardBackend: Promise<AttentionBackend> | undefined;
/** The cpu backend that computes every gradient case's out and lse (stateless, shared). */
function cpuForward(): Promise<AttentionBackend> {
  forwardBackend ??= createCpuBackend();
  return forwardBackend;
}

function toGradientCase(c: ConformanceCase): GradientCase {
  return Object.freeze({
    id: c.id,
    tags: c.tags,
    summary: c.summary,
    dtype: c.dtype,
    work: c.work,
    tolerance: c.gradientTolerance,
    forward: c,
    async build() {
      const { spec, inputs } = c.build();
      const { out, lse } = await (await cpuForward()).run(spec, inputs);
      const dOut = seededValues(tensorSizes(spec).out, seedOf(c.id), DOUT_STREAM);
      return {
        spec,
        inputs: {
          ...inputs,
          out: roundToDtype(out, spec.dtype),
          lse,
          dOut: roundToDtype(dOut, spec.dtype),
        },
      };
    },
  });
}

/**
 * The gradient catalogue: every case of `conformanceCases(options)` (same ids, tags and profile
 * rules) as a gradient case. Enumerating is cheap; `build()` runs the cpu forward.
 */
export function gradientCases(options: CatalogueOptions = {}): GradientCase[] {
  return conformanceCases(options).map(toGradientCase);
}

/** What a gradient case is compared against: a backend with `backward`, or a function. */
export type GradientReference =
  | AttentionBackend
  | ((
      spec: AttentionSpec,
      inputs: BackwardInputs,
    ) => Promise<AttentionGradients> | AttentionGradients);

/** The error of one gradient tensor. */
export interface TensorError {
  /** `dq`, `dk`, `dv` or `grads[slot]`. */
  readonly name: string;
  /** ‖g − ref‖₂ / ‖ref‖₂ (‖g‖₂ when the reference is all zero). */
  readonly relErr: number;
  readonly maxAbsErr: number;
  readonly bound: number;
}

export interface GradientComparison {
  /** One entry per compared tensor: dq, dk, dv, then each non-null grads[slot]. */
  readonly errors: readonly TensorError[];
  /** The entry with the largest relErr / bound. */
  readonly worst: TensorError | undefined;
  /** NaN or ±Infinity anywhere in the gradients. */
  readonly nonFinite: number;
  /** A gradient's length differs from the reference's (or grads has another slot count). */
  readonly shapeMismatch: boolean;
  /** Slots where one side returns null and the other a tensor. */
  readonly nullMismatches: number;
  /** Non-zero dq values in rows the reference forward fully masked (lse = -Infinity). */
  readonly maskedRowNonZero: number;
  readonly pass: boolean;
  /** One line naming what failed ('' when it passed). */
  readonly message: string;
}

/** Where dq's rows of fully masked queries are: for the exact-zero check. */
export interface MaskedRows {
  readonly spec: AttentionSpec;
  /** The forward's lse (the backward input): -Infinity marks a fully masked row. */
  readonly lse: Float32Array;
}

function tensorError(
  name: string,
  got: Float32Array,
  ref: Float32Array,
  bound: number,
): TensorError {
  let num = 0;
  let den = 0;
  let maxAbsErr = 0;
  const n = Math.min(got.length, ref.length);
  for (let i = 0; i < n; i++) {
    const d = got[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
    if (!(Math.abs(d) <= maxAbsErr)) maxAbsErr = Math.abs(d);
  }
  return { name, relErr: den === 0 ? Math.sqrt(num) : Math.sqrt(num / den), maxAbsErr, bound };
}

function countNonFinite(t: Float32Array): number {
  let n = 0;
  for (const x of t) if (!Number.isFinite(x)) n++;
  return n;
}

function maskedRowNonZeros(dq: Float32Array, masked: MaskedRows): number {
  const { spec, lse } = masked;
  const { batch: B, headsQ: H, seqQ: S, headDim: D } = spec;
  if (dq.length !== B * H * S * D || lse.length !== B * H * S) return 0;
  let n = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let s = 0; s < S; s++) {
        if (lse[(b * H + h) * S + s] !== Number.NEGATIVE_INFINITY) continue;
        const at = elementIndex(spec.layout, H, S, D, b, h, s, 0);
        for (let d = 0; d < D; d++) if (dq[at + d] !== 0) n++;
      }
    }
  }
  return n;
}

const isTensor = (x: unknown): x is Float32Array => x instanceof Float32Array;

/**
 * Compares gradients with a reference: relative L2 error of dq, dk, dv (bound `tolerance.qkv`)
 * and of each non-null `grads[slot]` (bound `tolerance.tensors`); null-ness per slot must match;
 * any NaN or ±Infinity fails; so does a length that differs. With `masked`, dq rows of fully
 * masked queries must be exactly zero.
 */
export function compareGradients(
  got: AttentionGradients,
  ref: AttentionGradients,
  tolerance: GradientTolerance,
  masked?: MaskedRows,
): GradientComparison {
  const problems: string[] = [];
  const errors: TensorError[] = [];
  let nonFinite = 0;
  let shapeMismatch = false;
  const compare = (name: string, g: unknown, r: Float32Array, bound: number) => {
    if (!isTensor(g)) {
      shapeMismatch = true;
      problems.push(`${name} is not a Float32Array`);
      return;
    }
    if (g.length !== r.length) {
      shapeMismatch = true;
      problems.push(`${name} has ${g.length} elements, expected ${r.length}`);
    }
    const bad = countNonFinite(g);
    if (bad > 0) problems.push(`${name} has ${bad} non-finite values`);
    nonFinite += bad;
    const e = tensorError(name, g, r, bound);
    errors.push(e);
    if (!(e.relErr <= bound)) {
      problems.push(`${name} relative error ${e.relErr.toExponential(2)} > ${bound}`);
    }
  };
  compare('dq', got.dq, ref.dq, tolerance.qkv);
  compare('dk', got.dk, ref.dk, tolerance.qkv);
  compare('dv', got.dv, ref.dv, tolerance.qkv);
  let nullMismatches = 0;
  const gotGrads = Array.isArray(got.grads) ? got.grads : [];
  if (!Array.isArray(got.grads) || got.grads.length !== ref.grads.length) {
    shapeMismatch = true;
    problems.push(
      `grads has ${Array.isArray(got.grads) ? got.grads.length : 'no'} slots, expected ${ref.grads.length}`,
    );
  }
  ref.grads.forEach((r, slot) => {
    const g = gotGrads[slot] ?? null;
    const name = `grads[${slot}]`;
    if ((g === null) !== (r === null)) {
      nullMismatches++;
      problems.push(
        `${name} is ${g === null ? 'null' : 'a tensor'}, expected ${r === null ? 'null' : 'a tensor'}`,
      );
      return;
    }
    if (r !== null) compare(name, g, r, tolerance.tensors);
  });
  const maskedRowNonZero = masked && isTensor(got.dq) ? maskedRowNonZeros(got.dq, masked) : 0;
  if (maskedRowNonZero > 0) {
    problems.push(`dq has ${maskedRowNonZero} non-zero values in fully masked rows`);
  }
  let worst: TensorError | undefined;
  for (const e of errors) {
    if (!worst || !(e.relErr / e.bound <= worst.relErr / worst.bound)) worst = e;
  }
  return {
    errors,
    worst,
    nonFinite,
    shapeMismatch,
    nullMismatches,
    maskedRowNonZero,
    pass: problems.length === 0,
    message: problems.join('; '),
  };
}

export interface RunGradientCaseOptions {
  /** Options for the backend under test's backward (e.g. { strategy: 'tiled' }). */
  readonly runOptions?: RunOptions;
  /** Options for a reference backend's backward. */
  readonly referenceOptions?: RunOptions;
}

export interface GradientCaseResult extends GradientComparison {
  readonly id: string;
  readonly summary: string;
  readonly tolerance: GradientTolerance;
  readonly backendMs: number;
  readonly referenceMs: number;
}

const copyInputs = (i: BackwardInputs): BackwardInputs => ({
  q: i.q.slice(),
  k: i.k.slice(),
  v: i.v.slice(),
  out: i.out.slice(),
  lse: i.lse.slice(),
  dOut: i.dOut.slice(),
});

/**
 * Builds a gradient case once, runs `backward` on `backend` and on `reference` (each on its own
 * copy of the same inputs), and compares.
 */
export async function runGradientCase(
  backend: AttentionBackend,
  c: GradientCase,
  reference: GradientReference,
  options: RunGradientCaseOptions = {},
): Promise<GradientCaseResult> {
  if (!backend.backward) throw new Error(`backend '${backend.name}' has no backward()`);
  const { spec, inputs } = await c.build();
  const refInputs = copyInputs(inputs);
  let t = performance.now();
  const got = await backend.backward(spec, inputs, options.runOptions);
  const backendMs = performance.now() - t;
  t = performance.now();
  let ref: AttentionGradients;
  if (typeof reference === 'function') ref = await reference(spec, refInputs);
  else if (reference.backward)
    ref = await reference.backward(spec, refInputs, options.referenceOptions);
  else throw new Error(`reference '${reference.name}' has no backward()`);
  const referenceMs = performance.now() - t;
  return {
    id: c.id,
    summary: c.summary,
    tolerance: c.tolerance,
    backendMs,
    referenceMs,
    ...compareGradients(got, ref, c.tolerance, { spec, lse: refInputs.lse }),
  };
}
