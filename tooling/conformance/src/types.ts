import type {
  AttentionConfig,
  AttentionInputs,
  AttentionSpec,
  Dtype,
  TensorLayout,
} from '@tessera/core';

/** Allowed error of a backend against the reference: relative ‖out‖ error, and lse error. */
export interface Tolerance {
  /** Bound on ‖out − ref‖₂ / ‖ref‖₂ over the whole output. */
  readonly out: number;
  /** Bound on |lse − ref| / max(1, |ref|) for every row that is not fully masked. */
  readonly lse: number;
}

/**
 * Tolerances by dtype. Inputs of f16/bf16 cases are rounded to the dtype on both sides, so these
 * cover accumulation and intermediate precision only: f32 1e-4, f16 2e-3 (≈ 2 ulp at 10 bits),
 * bf16 1e-2 (≈ 1.3 ulp at 7 bits; devices typically round P to bf16 before P·V).
 */
export const DTYPE_TOLERANCE: Readonly<Record<Dtype, Tolerance>> = Object.freeze({
  f32: Object.freeze({ out: 1e-4, lse: 1e-4 }),
  f16: Object.freeze({ out: 2e-3, lse: 2e-3 }),
  bf16: Object.freeze({ out: 1e-2, lse: 1e-2 }),
});

/**
 * Allowed error of a backend's gradients against the reference's, as a relative L2 error
 * ‖g − ref‖₂ / ‖ref‖₂ per gradient tensor (absolute ‖g‖₂ where the reference is all zero).
 */
export interface GradientTolerance {
  /** Bound for each of dq, dk and dv. */
  readonly qkv: number;
  /** Bound for each captured-tensor gradient `grads[slot]`. */
  readonly tensors: number;
}

/**
 * Gradient tolerances by dtype, looser than DTYPE_TOLERANCE for three reasons:
 * - each gradient element sums more terms than an output element: dk, dv sum over every query of
 *   every head of the group (GQA), dq over the keys, and a captured tensor's element over
 *   B·H·seqQ·seqKV (score, weight) pairs, in whatever order a device's atomics or reductions take;
 * - dS = P ∘ (dP − D) cancels by construction (Σ_kv dS = 0 per row), so its relative error is
 *   larger than P's; captured-tensor gradients are weighted sums of dS and inherit that, hence a
 *   looser `tensors` bound than `qkv`;
 * - on 16-bit specs devices round P and dS to the dtype before the dV, dQ and dK products (as
 *   FlashAttention-2 does), one more rounding than the forward: f16 5e-3 ≈ 5 ulp at 10 bits,
 *   bf16 2e-2 ≈ 2.5 ulp at 7 bits.
 * f32 2e-4 is 2× the forward's 1e-4; the cpu reference computes in f64. Measured with an f32
 * emulation (every product and sum rounded, sequential sums; P, dS rounded on 16-bit specs) on the
 * ci softmax cases up to 3e8 work: qkv ≤ 8.7e-7 (f32; 4.9e-4 on `extreme/*`), 2.1e-4 (f16),
 * 1.7e-3 (bf16); tensors ≤ 6.1e-6. The bounds leave room for device exp and reduction orders.
 */
export const GRADIENT_TOLERANCE: Readonly<Record<Dtype, GradientTolerance>> = Object.freeze({
  f32: Object.freeze({ qkv: 2e-4, tensors: 1e-3 }),
  f16: Object.freeze({ qkv: 5e-3, tensors: 1e-2 }),
  bf16: Object.freeze({ qkv: 2e-2, tensors: 5e-2 }),
});

/** One catalogue entry: cheap to hold; `build()` makes the spec and seeded inputs on demand. */
export interface ConformanceCase {
  /** Stable and unique, e.g. `pattern/sliding-window/gqa/alibi`; inputs are seeded from it. */
  readonly id: string;
  /** e.g. `pattern:slidingWindow`, `heads:gqa`, `mod:alibi`, `dtype:f16`, `masked-rows`. */
  readonly tags: readonly string[];
  /** The shape in words: `B1 H6/2 S64×97 D64/32 f32 bhsd`. */
  readonly summary: string;
  readonly dtype: Dtype;
  /** Dense-equivalent FLOPs, 2·B·H·seqQ·seqKV·(D + DV): what profiles and maxWork cap. */
  readonly work: number;
  readonly tolerance: Tolerance;
  /** What the gradient half of the catalogue allows this case (see `gradientCases`). */
  readonly gradientTolerance: GradientTolerance;
  build(): { spec: AttentionSpec; inputs: AttentionInputs };
}

export type Profile = 'ci' | 'full';

export interface CatalogueOptions {
  /** 'ci' (default): small sizes, for software Vulkan and 2-core CI; 'full': larger sizes. */
  readonly profile?: Profile;
  /**
   * Which of the pattern × {MHA, GQA, MQA} × {none, ALiBi, softcap} cases to keep. 'cover'
   * (default for 'ci'): three per pattern, each head configuration once and each score
   * modification once, all nine combinations across patterns. 'all' (default for 'full'): all nine
   * per pattern.
   */
  readonly crossProduct?: 'cover' | 'all';
  /** Leave out cases whose `work` exceeds this (default 2e9 for 'ci', unbounded for 'full'). */
  readonly maxWork?: number;
  /** Keep only the cases for which this returns true. */
  readonly filter?: (c: ConformanceCase) => boolean;
}

export interface Shape {
  batch: number;
  headsQ: number;
  headsKV: number;
  seqQ: number;
  seqKV: number;
  headDim: number;
  headDimV?: number;
  layout?: TensorLayout;
  dtype?: Dtype;
}

/** A case before it becomes a ConformanceCase: sizes now, everything else lazily. */
export interface CaseDef {
  id: string;
  tags: string[];
  shape: Shape;
  /** Amplitude of q and k (v is always in [-1, 1)). */
  amp?: number;
  tolerance?: Tolerance;
  /** Overrides GRADIENT_TOLERANCE[dtype] for this case's gradients. */
  gradientTolerance?: GradientTolerance;
  /** Mask, score modification, kernel, scale, tiling: built lazily from the seed (< 2^31). */
  extra?: (seed: number) => Partial<AttentionConfig>;
}
