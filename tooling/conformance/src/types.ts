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
  /** Mask, score modification, kernel, scale, tiling: built lazily from the seed (< 2^31). */
  extra?: (seed: number) => Partial<AttentionConfig>;
}
