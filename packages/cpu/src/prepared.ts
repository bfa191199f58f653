import {
  type AttentionInputs,
  type AttentionSpec,
  type CompiledExpr,
  InputError,
} from '@tessera/core';

/** A spec with its expressions compiled once, and inputs as the device would see them. */
export interface Prepared {
  readonly spec: AttentionSpec;
  /** q, k, v rounded to the spec's dtype. */
  readonly inputs: AttentionInputs;
  /** (b, h, q, kv) → attends?; null when the spec has no mask. */
  readonly mask: CompiledExpr | null;
  /** (b, h, q, kv, score) → modified score; null when the spec has none. */
  readonly scoreMod: CompiledExpr | null;
}

/**
 * The error for a score that is NaN or +Infinity. Finite scores and -Infinity (treated as masked)
 * are fine; NaN and +Infinity have no softmax meaning, so the run is rejected rather than guessed.
 */
export function badScore(
  spec: AttentionSpec,
  value: number,
  at: { b: number; h: number; q: number; kv: number; score: number },
): InputError {
  const where = `b=${at.b}, h=${at.h}, q=${at.q}, kv=${at.kv}`;
  if (spec.scoreMod === null) {
    return new InputError(
      `score scale·q·k is ${value} at ${where} (scale ${spec.scale}): scores must be finite`,
    );
  }
  return new InputError(
    `score modification '${spec.scoreMod.name}' gave ${value} at ${where} (score ${at.score}): it must give a finite value or -Infinity (= masked)`,
  );
}

/** What the backward kernels read: the forward's inputs (rounded) and outputs, and ∂loss/∂out. */
export interface BackwardPrepared extends Omit<Prepared, 'inputs'> {
  readonly inputs: {
    /** q, k, v rounded to the spec's dtype. */
    readonly q: Float32Array;
    readonly k: Float32Array;
    readonly v: Float32Array;
    /** f32 from the caller; the tests also pass f64 outputs of an exact forward. */
    readonly out: ArrayLike<number>;
    readonly lse: ArrayLike<number>;
    readonly dOut: ArrayLike<number>;
  };
}

/** Gradients as the backward kernels accumulate them, in f64 (the façade returns f32). */
export interface Gradients64 {
  readonly dq: Float64Array;
  readonly dk: Float64Array;
  readonly dv: Float64Array;
  /** By tensor slot; null for slots the score modification's gradient does not reach. */
  readonly grads: readonly (Float64Array | null)[];
}
