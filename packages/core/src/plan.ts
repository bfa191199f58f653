import { SpecError } from './errors.js';
import { type BlockLayout, deriveBlockLayout, type LayoutContext, layoutStats } from './layout.js';
import { type AttentionSpec, analyticLayoutOf, assertSpec } from './spec.js';

export const DEFAULT_BLOCK = 64;

const cache = new WeakMap<AttentionSpec, Map<string, BlockLayout>>();

/** The layout context of a spec for the given block sizes (default: the spec's tiling hints, else 64). */
export function layoutContext(
  spec: AttentionSpec,
  blocks: { blockQ?: number; blockKV?: number } = {},
): LayoutContext {
  assertSpec(spec, 'layoutContext()');
  return {
    seqQ: spec.seqQ,
    seqKV: spec.seqKV,
    blockQ: blocks.blockQ ?? spec.tiling.blockQ ?? DEFAULT_BLOCK,
    blockKV: blocks.blockKV ?? spec.tiling.blockKV ?? DEFAULT_BLOCK,
    batch: spec.batch,
    headsQ: spec.headsQ,
  };
}

/**
 * The block layout of a spec's mask: the pattern's analytic layout when it has one, else one
 * derived from the expression. Checked against the spec's shape and cached per spec and block size.
 */
export function blockLayout(
  spec: AttentionSpec,
  blocks: { blockQ?: number; blockKV?: number } = {},
): BlockLayout {
  const ctx = layoutContext(spec, blocks);
  const key = `${ctx.blockQ}x${ctx.blockKV}`;
  let perSpec = cache.get(spec);
  const hit = perSpec?.get(key);
  if (hit) return hit;
  const analytic = spec.mask ? analyticLayoutOf(spec) : undefined;
  const layout = analytic
    ? analytic(ctx)
    : deriveBlockLayout(
        spec.mask?.expr ?? null,
        spec.tensors.map((t) => t.data),
        ctx,
      );
  checkLayoutShape(layout, ctx);
  if (!perSpec) {
    perSpec = new Map();
    cache.set(spec, perSpec);
  }
  perSpec.set(key, layout);
  return layout;
}

function checkLayoutShape(l: BlockLayout, ctx: LayoutContext): void {
  const want = {
    seqQ: ctx.seqQ,
    seqKV: ctx.seqKV,
    blockQ: ctx.blockQ,
    blockKV: ctx.blockKV,
    numQBlocks: Math.ceil(ctx.seqQ / ctx.blockQ),
    numKVBlocks: Math.ceil(ctx.seqKV / ctx.blockKV),
  };
  for (const [k, v] of Object.entries(want)) {
    if (l[k as keyof typeof want] !== v)
      throw new SpecError(`mask layout has ${k} ${l[k as keyof typeof want]}, expected ${v}`);
  }
  if (l.batches !== 1 && l.batches !== ctx.batch)
    throw new SpecError(`mask layout has ${l.batches} batch slices, expected 1 or ${ctx.batch}`);
  if (l.heads !== 1 && l.heads !== ctx.headsQ)
    throw new SpecError(`mask layout has ${l.heads} head slices, expected 1 or ${ctx.headsQ}`);
  if (l.rowStart.length !== l.batches * l.heads * want.numQBlocks + 1)
    throw new SpecError('mask layout rowStart has the wrong length');
}

export type Strategy = 'tiled' | 'naive';

/** What one attention call costs under a strategy. Bytes are device-memory traffic, estimated. */
export interface CostEstimate {
  readonly strategy: Strategy;
  /** Multiply-adds counted as 2 FLOPs, over the (q, kv) pairs actually computed. */
  readonly flops: number;
  readonly bytesMoved: number;
  /** Memory beyond inputs and outputs: N×N scores for naive, LSE and index buffers for tiled. */
  readonly peakExtraBytes: number;
  readonly computedPairs: number;
  /** computedPairs over the dense batch × headsQ × seqQ × seqKV. */
  readonly density: number;
}

export const elementBytes = (dtype: AttentionSpec['dtype']): number => (dtype === 'f32' ? 4 : 2);

/** Feature dimension of a linear kernel (trig-rf yields a sin and a cos per random feature). */
export function featureDim(spec: AttentionSpec): number {
  if (spec.kernel.type !== 'linear') return 0;
  return spec.kernel.featureMap === 'trig-rf' ? 2 * spec.kernel.features : spec.kernel.features;
}

/** FLOPs, bytes and peak extra memory of a spec for a strategy (the bench reports memory saved from this). */
export function estimateCost(
  spec: AttentionSpec,
  options: { strategy: Strategy; layout?: BlockLayout } = { strategy: 'tiled' },
): CostEstimate {
  assertSpec(spec, 'estimateCost()');
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  const eb = elementBytes(spec.dtype);
  const BH = B * H;
  const io = eb * (BH * SQ * D + B * spec.headsKV * SK * (D + DV) + BH * SQ * DV) + 4 * BH * SQ;
  const lseBytes = 4 * BH * SQ;
  const dense = BH * SQ * SK;

  if (spec.kernel.type === 'linear') {
    const F = featureDim(spec);
    const projection = spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf';
    if (options.strategy === 'naive') {
      return {
        strategy: 'naive',
        flops: dense * 2 * (F + DV),
        bytesMoved: io + 3 * 4 * dense,
        peakExtraBytes: 4 * dense + lseBytes,
        computedPairs: dense,
        density: 1,
      };
    }
    const featureFlops = projection ? BH * (SQ + SK) * spec.kernel.features * D * 2 : 0;
    const flops = featureFlops + BH * (SK * F * (DV + 1) * 2 + SQ * F * (DV + 1) * 2);
    const state = 4 * BH * F * (DV + 1) + (projection ? 4 * spec.kernel.features * D : 0);
    return {
      strategy: 'tiled',
      flops,
      bytesMoved: io + state,
      peakExtraBytes: state,
      computedPairs: 0,
      density: 0,
    };
  }

  if (options.strategy === 'naive') {
    return {
      strategy: 'naive',
      flops: dense * 2 * (D + DV),
      bytesMoved: io + 4 * 4 * dense,
      peakExtraBytes: 4 * dense + lseBytes,
      computedPairs: dense,
      density: 1,
    };
  }
  const layout = options.layout ?? blockLayout(spec);
  const stats = layoutStats(layout, B, H);
  const indexBytes = 4 * (layout.rowStart.length + layout.kvBlocks.length) + layout.full.length;
  const kvReads = stats.visitedBlocks * layout.blockKV * (D + DV) * eb;
  return {
    strategy: 'tiled',
    flops: stats.computedPairs * 2 * (D + DV),
    bytesMoved: io + kvReads - eb * B * spec.headsKV * SK * (D + DV) + indexBytes,
    peakExtraBytes: lseBytes + indexBytes,
    computedPairs: stats.computedPairs,
    density: stats.density,
  };
}
