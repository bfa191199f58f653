import {
  type AttentionSpec,
  type BlockLayout,
  blockLayout,
  ceilDiv,
  type ExprNode,
  type RunOptions,
  UnsupportedError,
} from '@tessera/core';
import {
  children,
  type LayoutColumns,
  layoutColumns,
  scoreModGradient,
  type TensorGradientTerm,
  varsUsed,
} from '@tessera/core/backend';
import { mmaEligible } from '../emit/flash-mma.js';

/**
 * The backward pass's block schedule as data, decided once per spec: the path, the tiles, the
 * forward's block layout at those tiles (rows: which KV blocks each Q block visits; the dq pass
 * walks it) and its transpose (columns: which Q blocks visit each KV block; the dk/dv pass walks
 * it), the captured-tensor gradient terms and how each is reduced, and the launch grids.
 */
export interface BackwardPlan {
  /** 'mma': tensor cores (16-bit specs); 'simt': CUDA cores, f32 arithmetic. */
  readonly path: 'mma' | 'simt';
  /** The dk/dv pass: query rows per step, keys per CTA. */
  readonly blockQ: number;
  readonly blockKV: number;
  /** The spec's layout at (blockQ, blockKV) ... */
  readonly layout: BlockLayout;
  /** ... in its column view: per (slice, KV block) the visiting Q blocks, ascending, full flags. */
  readonly columns: ColumnLayout;
  /** The dq pass: query rows per CTA and keys per step, and the layout it walks (row view). */
  readonly dqBlockQ: number;
  readonly dqBlockKV: number;
  readonly dqLayout: BlockLayout;
  /** ∂s'/∂score (null without a score modification: 1). */
  readonly dScore: ExprNode | null;
  /** Captured-tensor gradient terms (score modification only), in core's order. */
  readonly terms: readonly PlannedTerm[];
  /** Slots of the captured f32 tensors the score modification reads: each gets a gradient. */
  readonly gradSlots: readonly number[];
  /** Scattered terms' 64-bit fixed-point accumulators, by slot: [offset, length]. */
  readonly fixed: ReadonlyMap<number, readonly [number, number]>;
  readonly fixedCount: number;
  /** Uniform terms' per-CTA partials plus their per-(b, h) sums, in floats. */
  readonly partialFloats: number;
  /**
   * Launch order of the two passes' CTAs: the block index (KV block for dk/dv, Q block for dq) is
   * the slowest-varying coordinate of a 1-D grid, ascending or descending so that the longest
   * columns (rows) start first — causal's first columns and last rows, BigBird's global blocks —
   * instead of forming a tail after the short ones.
   */
  readonly order: { readonly dkdv: BlockOrder; readonly dq: BlockOrder };
  /** Launch grids, in launch order (1-D for dk/dv and dq: block index slowest, then batch, head). */
  readonly grids: {
    readonly pre: readonly [number, number, number];
    readonly dkdv: readonly [number, number, number];
    readonly dq: readonly [number, number, number];
  };
}

export type BlockOrder = 'ascending' | 'descending';

/** The layout's column view (core's `layoutColumns`). */
export type ColumnLayout = LayoutColumns;

/**
 * A captured-tensor gradient term. 'uniform': the index reads only b and h (ALiBi slopes, per-head
 * temperatures), so each thread sums dS'·weight in a register and each CTA writes one partial per
 * (b, h), reduced in a fixed order by the last kernel. 'scattered': the index depends on q or kv
 * (a relative-position table): each contribution goes to the element's 64-bit fixed-point
 * accumulator by integer atomics, whose sum does not depend on the order.
 */
export interface PlannedTerm extends TensorGradientTerm {
  readonly reduce: 'uniform' | 'scattered';
}

/** Rows per warp step of the pre-pass: one warp per row. */
export const PRE_ROWS_PER_CTA = 4;
const MAX_SIMT_SHARED = 200 * 1024;

/** Shared bytes of the SIMT dk/dv kernel (the larger of the two SIMT kernels). */
export function simtBackwardShared(spec: AttentionSpec, bm: number, bn: number): number {
  const ldk = spec.headDim | 1;
  const ldv = spec.headDimV | 1;
  const lds = bn + 1;
  return (
    4 *
    (bn * ldk +
      bn * ldv +
      bn * spec.headDim +
      bn * spec.headDimV +
      bm * ldk +
      bm * ldv +
      2 * bm * lds +
      2 * bm)
  );
}

/** Captured tensor slots an expression loads. */
function loadedSlots(node: ExprNode, into = new Set<number>()): Set<number> {
  if (node.op === 'load') into.add(node.tensor);
  for (const c of children(node)) loadedSlots(c, into);
  return into;
}

/** Slots of captured f32 tensors the score modification reads. */
export function gradientSlots(spec: AttentionSpec): number[] {
  if (!spec.scoreMod) return [];
  return [...loadedSlots(spec.scoreMod.expr)]
    .filter((s) => spec.tensors[s]?.dtype === 'f32')
    .sort((a, b) => a - b);
}

export interface BackwardPlanOptions extends RunOptions {
  /** Force the CUDA-core path for a 16-bit spec. */
  readonly path?: 'mma' | 'simt';
  /**
   * Tensor-core path only: query rows per dk/dv step and keys per dq step (16, 32 or 64; default
   * 32 above head dim 64, else 64). A tuning knob: larger steps need more registers.
   */
  readonly steps?: { readonly dkdv?: 16 | 32 | 64; readonly dq?: 16 | 32 | 64 };
}

/** Decides the backward schedule of a softmax spec; throws UnsupportedError naming what is not. */
export function planBackward(spec: AttentionSpec, options: BackwardPlanOptions = {}): BackwardPlan {
  if (spec.kernel.type !== 'softmax')
    throw new UnsupportedError(
      `cuda: the backward pass of ${spec.kernel.type} kernels is not implemented yet (softmax only)`,
    );
  if (spec.batch > 65535 || spec.headsQ > 65535)
    throw new UnsupportedError(
      `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
    );
  const mma = options.path !== 'simt' && mmaBackwardEligible(spec);
  if (options.path === 'mma' && !mma)
    throw new UnsupportedError(
      `cuda: the tensor-core backward needs f16/bf16 and head dims that are multiples of 16 up to 128 (got ${spec.dtype}, headDim ${spec.headDim}, headDimV ${spec.headDimV})`,
    );
  let blockQ: number;
  let blockKV: number;
  let dqBlockQ: number;
  let dqBlockKV: number;
  if (mma) {
    // A warp owns 16 keys (dk/dv) or 16 query rows (dq) of 4 warps; the streamed side's step is
    // 32 above head dim 64, so the f32 accumulators and score fragments stay in registers.
    const step = Math.max(spec.headDim, spec.headDimV) > 64 ? 32 : 64;
    for (const x of [options.steps?.dkdv, options.steps?.dq])
      if (x !== undefined && x !== 16 && x !== 32 && x !== 64)
        throw new UnsupportedError(`cuda: backward steps must be 16, 32 or 64 (got ${x})`);
    blockKV = 64;
    blockQ = options.steps?.dkdv ?? step;
    dqBlockQ = 64;
    dqBlockKV = options.steps?.dq ?? step;
  } else {
    const fit = [32, 16, 8].find((b) => simtBackwardShared(spec, b, b) <= MAX_SIMT_SHARED);
    if (fit === undefined)
      throw new UnsupportedError(
        `cuda: the CUDA-core backward supports head dims up to 512 (got headDim ${spec.headDim}, headDimV ${spec.headDimV})`,
      );
    blockQ = fit;
    blockKV = fit;
    dqBlockQ = fit;
    dqBlockKV = fit;
  }
  const layout = blockLayout(spec, { blockQ, blockKV });
  const dqLayout = blockLayout(spec, { blockQ: dqBlockQ, blockKV: dqBlockKV });
  const columns = layoutColumns(layout);
  const grad = spec.scoreMod
    ? scoreModGradient(
        spec.scoreMod.expr,
        spec.tensors.map((t) => t.dtype),
      )
    : null;
  const terms: PlannedTerm[] = (grad?.tensors ?? []).map((t) => {
    const v = varsUsed(t.index) as Set<string>;
    const uniform = !v.has('q') && !v.has('kv') && !v.has('score');
    return { ...t, reduce: uniform ? 'uniform' : 'scattered' };
  });
  const fixed = new Map<number, readonly [number, number]>();
  let fixedCount = 0;
  for (const t of terms) {
    if (t.reduce !== 'scattered' || fixed.has(t.slot)) continue;
    const len = spec.tensors[t.slot]?.length ?? 0;
    fixed.set(t.slot, [fixedCount, len]);
    fixedCount += len;
  }
  const nkb = ceilDiv(spec.seqKV, blockKV);
  const uniform = terms.filter((t) => t.reduce === 'uniform').length;
  const nqb = ceilDiv(spec.seqQ, dqBlockQ);
  const kvSlices = spec.batch * spec.headsKV;
  const qSlices = spec.batch * spec.headsQ;
  if (nkb * kvSlices > 2 ** 31 - 1 || nqb * qSlices > 2 ** 31 - 1)
    throw new UnsupportedError(
      `cuda: the backward pass needs at most 2^31 - 1 CTAs per pass (got ${nkb * kvSlices} and ${nqb * qSlices})`,
    );
  return {
    path: mma ? 'mma' : 'simt',
    blockQ,
    blockKV,
    layout,
    columns,
    dqBlockQ,
    dqBlockKV,
    dqLayout,
    dScore: grad?.dScore ?? null,
    terms,
    gradSlots: gradientSlots(spec),
    fixed,
    fixedCount,
    partialFloats: uniform * spec.batch * spec.headsQ * (nkb + 1),
    order: {
      dkdv: longestFirst(columns.colStart, layout.batches * layout.heads, nkb),
      dq: longestFirst(dqLayout.rowStart, dqLayout.batches * dqLayout.heads, nqb),
    },
    grids: {
      // 16 rows per warp: a grid-stride loop over the rows.
      pre: [ceilDiv(spec.batch * spec.headsQ * spec.seqQ, 16 * PRE_ROWS_PER_CTA), 1, 1],
      dkdv: [nkb * kvSlices, 1, 1],
      dq: [nqb * qSlices, 1, 1],
    },
  };
}

/**
 * The order that starts the longest blocks first: the total length (over slices) of each block
 * index of a CSR view, and ascending unless the longest lies in the second half.
 */
export function longestFirst(start: Int32Array, slices: number, blocks: number): BlockOrder {
  let best = 0;
  let at = 0;
  for (let i = 0; i < blocks; i++) {
    let n = 0;
    for (let s = 0; s < slices; s++)
      n += (start[s * blocks + i + 1] as number) - (start[s * blocks + i] as number);
    if (n > best) {
      best = n;
      at = i;
    }
  }
  return at >= blocks / 2 ? 'descending' : 'ascending';
}

/** Tensor-core backward: 16-bit inputs, head dims multiples of 16 up to 128. */
export function mmaBackwardEligible(spec: AttentionSpec): boolean {
  return (
    mmaEligible(spec) &&
    spec.headDim % 16 === 0 &&
    spec.headDimV % 16 === 0 &&
    spec.headDim <= 128 &&
    spec.headDimV <= 128
  );
}
