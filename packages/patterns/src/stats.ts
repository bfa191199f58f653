import { compileMask, type LayoutContext, layoutStats, type Mask, SpecError } from '@tessera/core';
import { maskLayout } from './layout-helpers.js';
import { options, positiveInt } from './validate.js';

export interface StatsOptions {
  /** Layout block sizes (default 64 × 64). */
  readonly blockQ?: number;
  readonly blockKV?: number;
  /** Batch and query heads to count over (default 1 × 1; per-head masks need their head count). */
  readonly batch?: number;
  readonly headsQ?: number;
}

export interface PatternStats {
  /** Unmasked (q, kv) pairs, summed over batch × heads: what the attention actually uses. */
  readonly unmaskedPairs: number;
  /** batch × headsQ × seqQ × seqKV. */
  readonly totalPairs: number;
  /** unmaskedPairs / totalPairs. */
  readonly density: number;
  /** Blocks a tiled kernel visits, and how many of them need no per-element mask. */
  readonly visitedBlocks: number;
  readonly fullBlocks: number;
  readonly partialBlocks: number;
  /** All blocks of the grid, summed over batch × heads. */
  readonly totalBlocks: number;
  /** visitedBlocks / totalBlocks. */
  readonly blockDensity: number;
  /** In-bounds pairs inside visited blocks: what a tiled kernel computes. */
  readonly computedPairs: number;
}

/** A context for a mask at the given sizes, with options validated (shared with `render`). */
export function statsContext(
  where: string,
  seqQ: number,
  seqKV: number,
  o: StatsOptions,
): LayoutContext {
  return {
    seqQ: positiveInt(where, 'seqQ', seqQ),
    seqKV: positiveInt(where, 'seqKV', seqKV),
    blockQ: positiveInt(where, 'blockQ', o.blockQ ?? 64),
    blockKV: positiveInt(where, 'blockKV', o.blockKV ?? 64),
    batch: positiveInt(where, 'batch', o.batch ?? 1),
    headsQ: positiveInt(where, 'headsQ', o.headsQ ?? 1),
  };
}

/**
 * Counts of a mask at one size: unmasked pairs (exact: full blocks by area, partial blocks element
 * by element, so the cost is the layout plus partial blocks × block area), visited blocks, density.
 */
export function stats(mask: Mask, seqQ: number, seqKV: number, opts?: StatsOptions): PatternStats {
  const where = 'stats';
  if (mask?.kind !== 'mask') throw new SpecError(`${where}: first argument must be a Mask`);
  const o = options<StatsOptions>(where, opts, ['blockQ', 'blockKV', 'batch', 'headsQ']);
  const ctx = statsContext(where, seqQ, seqKV, o);
  const layout = maskLayout(mask, ctx);
  const ls = layoutStats(layout, ctx.batch, ctx.headsQ);
  const f = compileMask(mask);
  let pairs = 0;
  for (let b = 0; b < layout.batches; b++) {
    for (let h = 0; h < layout.heads; h++) {
      const slice = b * layout.heads + h;
      for (let i = 0; i < layout.numQBlocks; i++) {
        const r = slice * layout.numQBlocks + i;
        const q0 = i * ctx.blockQ;
        const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
        for (let e = layout.rowStart[r] as number; e < (layout.rowStart[r + 1] as number); e++) {
          const k0 = (layout.kvBlocks[e] as number) * ctx.blockKV;
          const k1 = Math.min(ctx.seqKV, k0 + ctx.blockKV);
          if (layout.full[e]) {
            pairs += (q1 - q0) * (k1 - k0);
            continue;
          }
          for (let q = q0; q < q1; q++)
            for (let kv = k0; kv < k1; kv++) if (f(b, h, q, kv)) pairs++;
        }
      }
    }
  }
  const rep = (ctx.batch / layout.batches) * (ctx.headsQ / layout.heads);
  const unmaskedPairs = pairs * rep;
  const totalPairs = ctx.batch * ctx.headsQ * ctx.seqQ * ctx.seqKV;
  const totalBlocks = ctx.batch * ctx.headsQ * layout.numQBlocks * layout.numKVBlocks;
  return {
    unmaskedPairs,
    totalPairs,
    density: unmaskedPairs / totalPairs,
    visitedBlocks: ls.visitedBlocks,
    fullBlocks: ls.fullBlocks,
    partialBlocks: ls.visitedBlocks - ls.fullBlocks,
    totalBlocks,
    blockDensity: ls.visitedBlocks / totalBlocks,
    computedPairs: ls.computedPairs,
  };
}
