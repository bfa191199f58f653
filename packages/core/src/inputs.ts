import { InputError } from './errors.js';
import { type AttentionSpec, assertSpec, tensorSizes } from './spec.js';

/** Query, key and value tensors as Float32Array, in the spec's layout (BHSD by default). */
export interface AttentionInputs {
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/** What every backend returns: out in the spec's layout, lse per (b, h, q), natural log. */
export interface AttentionOutputs {
  readonly out: Float32Array;
  readonly lse: Float32Array;
}

/**
 * Checks inputs against a spec before any backend touches them: each of q, k, v must be a
 * Float32Array of the right length holding only finite values. Non-finite inputs are rejected
 * (not propagated), so every backend behaves the same. Throws InputError naming the tensor.
 */
export function validateInputs(spec: AttentionSpec, inputs: AttentionInputs): void {
  assertSpec(spec, 'validateInputs()');
  if (typeof inputs !== 'object' || inputs === null)
    throw new InputError('inputs must be an object { q, k, v }');
  const sizes = tensorSizes(spec);
  const shapes = {
    q: `batch ${spec.batch} × headsQ ${spec.headsQ} × seqQ ${spec.seqQ} × headDim ${spec.headDim}`,
    k: `batch ${spec.batch} × headsKV ${spec.headsKV} × seqKV ${spec.seqKV} × headDim ${spec.headDim}`,
    v: `batch ${spec.batch} × headsKV ${spec.headsKV} × seqKV ${spec.seqKV} × headDimV ${spec.headDimV}`,
  };
  for (const name of ['q', 'k', 'v'] as const) {
    const t = inputs[name];
    if (!(t instanceof Float32Array)) {
      const got = t === undefined ? 'undefined' : ((t as object)?.constructor?.name ?? typeof t);
      throw new InputError(`${name} must be a Float32Array (got ${got})`);
    }
    if (t.length !== sizes[name]) {
      throw new InputError(
        `${name} has ${t.length} elements, expected ${sizes[name]} (${shapes[name]})`,
      );
    }
  }
  for (const name of ['q', 'k', 'v'] as const) {
    const t = inputs[name];
    for (let i = 0; i < t.length; i++) {
      const x = t[i] as number;
      if (x - x !== 0) throw new InputError(`${name}[${i}] is ${x}: inputs must be finite`);
    }
  }
}

/** Index of element (b, h, s, d) in a tensor of `heads` heads, `seq` rows and `dim` columns. */
export function elementIndex(
  layout: AttentionSpec['layout'],
  heads: number,
  seq: number,
  dim: number,
  b: number,
  h: number,
  s: number,
  d: number,
): number {
  return layout === 'bhsd'
    ? ((b * heads + h) * seq + s) * dim + d
    : ((b * seq + s) * heads + h) * dim + d;
}

/** What `backward` takes: the forward's inputs and outputs, and the loss's gradient of `out`. */
export interface BackwardInputs extends AttentionInputs {
  /** The forward's output (spec layout). */
  readonly out: Float32Array;
  /** The forward's log-sum-exp per (b, h, q); -Infinity for fully masked rows. */
  readonly lse: Float32Array;
  /** ∂loss/∂out, in the layout of out. */
  readonly dOut: Float32Array;
}

/** What `backward` returns: gradients of q, k, v in their layouts, and of captured tensors. */
export interface AttentionGradients {
  readonly dq: Float32Array;
  readonly dk: Float32Array;
  readonly dv: Float32Array;
  /**
   * By slot of `spec.tensors`: the gradient of each captured f32 tensor that the score
   * modification reads (same length as the tensor), and null for the others (i32 tensors, tensors
   * only the mask reads). `tensorSlot(spec, ref)` finds a captured tensor's slot.
   */
  readonly grads: readonly (Float32Array | null)[];
}

/**
 * Checks backward inputs: q, k, v as validateInputs does, then out and dOut (finite, the output's
 * length) and lse (the row count; finite or -Infinity). Throws InputError naming the tensor.
 */
export function validateBackwardInputs(spec: AttentionSpec, inputs: BackwardInputs): void {
  validateInputs(spec, inputs);
  const sizes = tensorSizes(spec);
  const expected = { out: sizes.out, dOut: sizes.out, lse: sizes.lse };
  const shapes = {
    out: `batch ${spec.batch} × headsQ ${spec.headsQ} × seqQ ${spec.seqQ} × headDimV ${spec.headDimV}`,
    dOut: `batch ${spec.batch} × headsQ ${spec.headsQ} × seqQ ${spec.seqQ} × headDimV ${spec.headDimV}`,
    lse: `batch ${spec.batch} × headsQ ${spec.headsQ} × seqQ ${spec.seqQ}`,
  };
  for (const name of ['out', 'dOut', 'lse'] as const) {
    const t = inputs[name];
    if (!(t instanceof Float32Array)) {
      const got = t === undefined ? 'undefined' : ((t as object)?.constructor?.name ?? typeof t);
      throw new InputError(`${name} must be a Float32Array (got ${got})`);
    }
    if (t.length !== expected[name]) {
      throw new InputError(
        `${name} has ${t.length} elements, expected ${expected[name]} (${shapes[name]})`,
      );
    }
  }
  for (const name of ['out', 'dOut'] as const) {
    const t = inputs[name];
    for (let i = 0; i < t.length; i++) {
      const x = t[i] as number;
      if (x - x !== 0) throw new InputError(`${name}[${i}] is ${x}: it must be finite`);
    }
  }
  const lse = inputs.lse;
  for (let i = 0; i < lse.length; i++) {
    const x = lse[i] as number;
    if (Number.isNaN(x) || x === Number.POSITIVE_INFINITY) {
      throw new InputError(
        `lse[${i}] is ${x}: it must be finite, or -Infinity for a fully masked row`,
      );
    }
  }
}
