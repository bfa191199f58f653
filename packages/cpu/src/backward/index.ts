import type { AttentionGradients, AttentionSpec, BlockLayout, Strategy } from '@tessera/core';
import { featureDim } from '@tessera/core/backend';
import { compile, roundInputs } from '../attend.js';
import type { BackwardPrepared, Gradients64 } from '../prepared.js';
import { linearBackwardNaive, linearBackwardPrefix } from './linear.js';
import { scoreGradient, softmaxBackwardNaive, softmaxBackwardTiled } from './softmax.js';

/** What backwardCpu reads: q, k, v as given (rounded here), out / lse / dOut in f32 or f64. */
export interface BackwardArrays {
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly out: ArrayLike<number>;
  readonly lse: ArrayLike<number>;
  readonly dOut: ArrayLike<number>;
}

/**
 * The reference backward of a checked spec on validated inputs, in f64: q, k, v are rounded to
 * the spec's dtype as the forward rounds them, and the gradients are those of `out` only (the
 * gradient with respect to lse is not propagated: dLse is taken as 0, as in FlashAttention).
 * `layout` gives the block layout the tiled softmax walks.
 */
export function backwardCpu(
  spec: AttentionSpec,
  inputs: BackwardArrays,
  strategy: Strategy,
  layout: (spec: AttentionSpec) => BlockLayout,
): Gradients64 {
  const compiled = compile(spec);
  const rounded = roundInputs(spec, inputs);
  const p: BackwardPrepared = {
    spec,
    inputs: { ...inputs, q: rounded.q, k: rounded.k, v: rounded.v },
    mask: compiled.mask,
    scoreMod: compiled.scoreMod,
  };
  if (compiled.linear) {
    return strategy === 'naive'
      ? linearBackwardNaive(p, compiled.linear)
      : linearBackwardPrefix(p, compiled.linear);
  }
  const sg = scoreGradient(spec);
  return strategy === 'naive'
    ? softmaxBackwardNaive(p, sg)
    : softmaxBackwardTiled(p, layout(spec), sg);
}

/** The gradients as the API returns them: Float32Array in the spec's layout (and tensor shapes). */
export function toFloat32(g: Gradients64): AttentionGradients {
  return {
    dq: Float32Array.from(g.dq),
    dk: Float32Array.from(g.dk),
    dv: Float32Array.from(g.dv),
    grads: g.grads.map((t) => (t === null ? null : Float32Array.from(t))),
  };
}

/**
 * Bytes the 'naive' backward allocates beyond inputs and gradients: per (batch, head) two f64
 * seqQ × seqKV matrices (softmax: raw scores and P; linear: the kernel matrix and its
 * gradient), and f64 rows.
 */
export function backwardNaiveBytes(spec: AttentionSpec): number {
  const { seqQ: SQ, seqKV: SK } = spec;
  const rows =
    spec.kernel.type === 'linear' ? 8 * (SQ + SK) * (2 * featureDim(spec) + 2) : 8 * (SQ + SK);
  return 16 * SQ * SK + rows;
}
