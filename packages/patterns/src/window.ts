import { defineMask, type Mask, vars } from '@tessera/core';
import { checkHeads, type OffsetSet, toeplitzLayout } from './layout-helpers.js';
import { stepOffsets } from './offsets.js';
import {
  bool,
  type HeadParam,
  headCount,
  headParam,
  options,
  type PerHead,
  positiveInt,
  showParam,
} from './validate.js';

const { q, kv } = vars;

export interface WindowOptions {
  /** Causal (default true): look back only. Otherwise the window is symmetric around q. */
  readonly causal?: boolean;
}

function offsetSets(where: string, w: HeadParam, d: HeadParam): () => OffsetSet[] {
  const heads = headCount(where, [w, d]);
  return () => Array.from({ length: heads }, (_, h) => stepOffsets(w.at(h), d.at(h)));
}

/**
 * Sliding window of `window` keys. Causal (the default): `q − window < kv ≤ q`, i.e. the query
 * and the `window − 1` keys before it. Symmetric (`causal: false`): `|q − kv| < window`, i.e.
 * `window − 1` keys on each side plus the query's own position. `window` may be an array with one
 * width per query head (then the layout has one slice per head).
 */
export function slidingWindow(window: PerHead, opts?: WindowOptions): Mask {
  const where = 'slidingWindow';
  const o = options<WindowOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, true);
  const w = headParam(where, 'window', window, positiveInt);
  const one = headParam(where, 'dilation', 1, positiveInt);
  const sets = offsetSets(where, w, one);
  const d = q.sub(kv);
  const expr = isCausal ? d.ge(0).and(d.lt(w.expr)) : d.abs().lt(w.expr);
  return defineMask(expr, {
    name: `sliding-window(${showParam(w)}${isCausal ? ', causal' : ''})`,
    layout: (ctx) => {
      const s = sets();
      checkHeads(where, ctx, s.length);
      return toeplitzLayout(ctx, s, isCausal);
    },
  });
}

/**
 * Dilated sliding window: `window` keys spaced `dilation` apart. Causal (the default):
 * `q − kv ∈ {0, dilation, 2·dilation, …, (window − 1)·dilation}`. Symmetric: `|q − kv|` in that
 * set (so `2·window − 1` keys). `dilation: 1` is `slidingWindow(window)`. Either parameter may be
 * an array with one value per query head (Longformer varies the dilation by head).
 */
export function dilated(window: PerHead, dilation: PerHead, opts?: WindowOptions): Mask {
  const where = 'dilated';
  const o = options<WindowOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, true);
  const w = headParam(where, 'window', window, positiveInt);
  const dil = headParam(where, 'dilation', dilation, positiveInt);
  const sets = offsetSets(where, w, dil);
  const d = q.sub(kv);
  const a = isCausal ? d : d.abs();
  let expr = a.mod(dil.expr).eq(0).and(a.div(dil.expr).lt(w.expr));
  if (isCausal) expr = d.ge(0).and(expr);
  return defineMask(expr, {
    name: `dilated(${showParam(w)}, ${showParam(dil)}${isCausal ? ', causal' : ''})`,
    layout: (ctx) => {
      const s = sets();
      checkHeads(where, ctx, s.length);
      return toeplitzLayout(ctx, s, isCausal);
    },
  });
}
