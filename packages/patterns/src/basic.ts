import { defineMask, fullLayout, lit, type Mask, vars } from '@tessera/core';
import { intervalLayout, toeplitzLayout } from './layout-helpers.js';
import { ALL_OFFSETS } from './offsets.js';
import { nonNegativeInt } from './validate.js';

const { q, kv } = vars;

/** No masking: every query attends to every key. */
export function full(): Mask {
  return defineMask(lit(true), { name: 'full', layout: fullLayout });
}

/**
 * Causal: query `q` attends to key `kv` when `kv ≤ q` (indices aligned at 0, also when
 * seqQ ≠ seqKV). The expression is exactly `q >= kv`, which linear kernels recognise.
 */
export function causal(): Mask {
  return defineMask(q.ge(kv), {
    name: 'causal',
    layout: (ctx) => toeplitzLayout(ctx, [ALL_OFFSETS], true),
  });
}

/**
 * Prefix-LM: keys before `prefixLen` are seen by every query (a bidirectional prefix), the rest
 * causally: `kv < prefixLen || kv ≤ q`. `prefixLM(0)` is `causal()`.
 */
export function prefixLM(prefixLen: number): Mask {
  const p = nonNegativeInt('prefixLM', 'prefixLen', prefixLen);
  return defineMask(kv.lt(p).or(kv.le(q)), {
    name: `prefix-lm(${p})`,
    layout: (ctx) =>
      intervalLayout(
        ctx,
        (_q0, q1) => [0, Math.max(p, q1)],
        // The hardest element of a block is (q0, k1 − 1).
        (q0, _q1, _k0, k1) => k1 - 1 < p || k1 - 1 <= q0,
      ),
  });
}
