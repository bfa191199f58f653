// Shared checks: a mask's analytic layout against core's O(N²) per-element layout, and its element
// mask against an independent predicate written from the pattern's prose definition.
import {
  type BlockLayout,
  compileMask,
  exactBlockLayout,
  type LayoutContext,
  layoutDifference,
  type Mask,
  type TensorRef,
} from '@tessera/core';
import { resolveTensors } from '@tessera/core/backend';
import fc from 'fast-check';

/** Reference predicate over (h, q, kv): what the pattern's definition says. */
export type Ref = (h: number, q: number, kv: number) => boolean;

/** Layout sizes: small, rarely block multiples, seqQ and seqKV independent. */
export const sizes = (max = 80) =>
  fc.record({
    seqQ: fc.integer({ min: 1, max }),
    seqKV: fc.integer({ min: 1, max }),
    blockQ: fc.integer({ min: 1, max: 24 }),
    blockKV: fc.integer({ min: 1, max: 24 }),
  });

export const ctxOf = (
  s: { seqQ: number; seqKV: number; blockQ: number; blockKV: number },
  headsQ = 1,
): LayoutContext => ({
  ...s,
  batch: 1,
  headsQ,
});

/** The O(N²) layout core computes by evaluating every element of the mask's expression. */
export function exactLayout(mask: Mask, ctx: LayoutContext): BlockLayout {
  const slots: TensorRef[] = [];
  const node = resolveTensors(mask.expr.node, slots);
  return exactBlockLayout(
    node,
    slots.map((t) => t.data),
    ctx,
  );
}

/** Throws unless the analytic layout equals the per-element one (and has legal slice counts). */
export function checkLayout(mask: Mask, ctx: LayoutContext): void {
  if (!mask.layout) throw new Error(`${mask.name} has no analytic layout`);
  const analytic = mask.layout(ctx);
  if (analytic.batches !== 1 || (analytic.heads !== 1 && analytic.heads !== ctx.headsQ)) {
    throw new Error(`${mask.name}: slices ${analytic.batches}×${analytic.heads}`);
  }
  const diff = layoutDifference(analytic, exactLayout(mask, ctx));
  if (diff !== null) {
    throw new Error(`${mask.name} at ${JSON.stringify(ctx)}: analytic vs exact: ${diff}`);
  }
}

/** Throws unless the compiled mask equals `ref` on every (h, q, kv) of the context. */
export function checkElements(mask: Mask, ctx: LayoutContext, ref: Ref): void {
  const f = compileMask(mask);
  for (let h = 0; h < ctx.headsQ; h++) {
    for (let q = 0; q < ctx.seqQ; q++) {
      for (let kv = 0; kv < ctx.seqKV; kv++) {
        const want = ref(h, q, kv);
        if (f(0, h, q, kv) !== want) {
          throw new Error(`${mask.name}: (h=${h}, q=${q}, kv=${kv}) is ${!want}, expected ${want}`);
        }
      }
    }
  }
}

/** Both checks. */
export function checkMask(mask: Mask, ctx: LayoutContext, ref: Ref): void {
  checkElements(mask, ctx, ref);
  checkLayout(mask, ctx);
}

export const RUNS = { numRuns: 150 };
