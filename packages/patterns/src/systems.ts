import { ceilDiv, defineMask, type Mask, SpecError, vars } from '@tessera/core';
import { combine } from './combinators.js';
import { globalTokens } from './global.js';
import { mergeIntervals, unitLayout } from './layout-helpers.js';
import { randomParts } from './random.js';
import { bool, nonNegativeInt, options, type PerHead, positiveInt, seedInt } from './validate.js';
import { dilated } from './window.js';

export interface BigBirdOptions {
  /** Sliding window width in blocks; odd (3 = the block itself and one block on each side). */
  readonly window: number;
  /** The first `globalBlocks` blocks are global: they attend to all and all attend to them. */
  readonly globalBlocks: number;
  /** Random key blocks each query block attends to (stratified draw, see `random`). */
  readonly randomBlocks: number;
  /** Block size in tokens: every part of the pattern is decided per (q-block, kv-block). */
  readonly block: number;
  /** Seed of the random blocks (required when randomBlocks > 0). */
  readonly seed?: number;
  /** Key length the mask is used with (required when randomBlocks > 0: the draw's range). */
  readonly seqKV?: number;
  /** A different random draw per query head. */
  readonly perHead?: boolean;
}

/**
 * BigBird (ITC): with `qb = ⌊q/block⌋`, `kb = ⌊kv/block⌋`, a pair is unmasked when
 * `|qb − kb| ≤ (window − 1)/2` (sliding blocks), or `qb < globalBlocks` or `kb < globalBlocks`
 * (global blocks), or kb is one of the `randomBlocks` random key blocks of qb (as
 * `random({ perRow: randomBlocks, block, seed, seqKV })`). Random blocks may coincide with window
 * or global ones. The layout is exact at any layout block size, with no per-element work.
 */
export function bigBird(opts: BigBirdOptions): Mask {
  const where = 'bigBird';
  const o = options<BigBirdOptions>(where, opts, [
    'window',
    'globalBlocks',
    'randomBlocks',
    'block',
    'seed',
    'seqKV',
    'perHead',
  ]);
  const w = positiveInt(where, 'window', o.window);
  if (w % 2 !== 1)
    throw new SpecError(`${where}: window must be an odd number of blocks (got ${w})`);
  const g = nonNegativeInt(where, 'globalBlocks', o.globalBlocks);
  const r = nonNegativeInt(where, 'randomBlocks', o.randomBlocks);
  const B = positiveInt(where, 'block', o.block);
  const perHead = bool(where, 'perHead', o.perHead, false);
  const half = (w - 1) / 2;
  const { q, kv } = vars;
  const qb = q.div(B);
  const kb = kv.div(B);
  let expr = qb.sub(kb).abs().le(half);
  if (g > 0) expr = expr.or(qb.lt(g)).or(kb.lt(g));
  const rand =
    r > 0
      ? randomParts(where, { perRow: r, seed: o.seed, block: B, seqKV: o.seqKV, perHead })
      : undefined;
  if (!rand) {
    // Unused without random blocks, but a malformed value is still a mistake worth naming.
    if (o.seed !== undefined) seedInt(where, o.seed);
    if (o.seqKV !== undefined) positiveInt(where, 'seqKV', o.seqKV);
  }
  if (rand) expr = expr.or(rand.expr);
  return defineMask(expr, {
    name: `bigbird(window=${w}, global=${g}, random=${r}, block=${B}${rand ? `, seed=${o.seed}` : ''})`,
    layout: (ctx) => {
      rand?.check(ctx);
      if (g > 0 && (g - 1) * B >= Math.max(ctx.seqQ, ctx.seqKV)) {
        throw new SpecError(
          `${where}: globalBlocks (${g}) of ${B} tokens exceed the sequence (seqQ ${ctx.seqQ}, seqKV ${ctx.seqKV})`,
        );
      }
      const nkb = ceilDiv(ctx.seqKV, B);
      const heads = rand?.perHead ? ctx.headsQ : 1;
      return unitLayout(ctx, B, heads, (h, u) => {
        const parts = [u - half, u + half + 1];
        if (g > 0) parts.push(0, u < g ? nkb : g);
        if (rand) parts.push(...rand.rows(h, u, ctx));
        return mergeIntervals(parts);
      });
    },
  });
}

export interface LongformerOptions {
  /**
   * Local window width. Symmetric (the default): ⌊window/2⌋ keys on each side plus the token
   * itself, as in the paper. Causal: the token and the window − 1 keys before it.
   */
  readonly window: number;
  /** Gap between attended local keys; a number, or one per query head. Default 1. */
  readonly dilation?: PerHead;
  /** Global tokens (indices, or a count of leading tokens); omit for none. */
  readonly global?: number | readonly number[] | Int32Array;
  /** Autoregressive variant: only keys at or before the query. Default false. */
  readonly causal?: boolean;
}

/**
 * Longformer: a dilated sliding window plus global tokens. With `a = |q − kv|` (symmetric) a pair
 * is unmasked when `a` is a multiple of the dilation `d` and `a/d ≤ ⌊window/2⌋`; with `causal`,
 * when `q − kv ∈ {0, d, …, (window − 1)·d}`; and in both, when q or kv is a global token.
 * `dilation` may differ by head (the paper's multi-head dilation): then the layout has one slice
 * per head and the spec must have that many query heads.
 */
export function longformer(opts: LongformerOptions): Mask {
  const where = 'longformer';
  const o = options<LongformerOptions>(where, opts, ['window', 'dilation', 'global', 'causal']);
  const w = positiveInt(where, 'window', o.window);
  const isCausal = bool(where, 'causal', o.causal, false);
  const local = isCausal
    ? dilated(w, o.dilation ?? 1, { causal: true })
    : dilated(Math.floor(w / 2) + 1, o.dilation ?? 1, { causal: false });
  const d = o.dilation;
  const dil =
    d === undefined
      ? ''
      : `, dilation=${typeof d === 'number' ? d : `[${Array.from(d).join(',')}]`}`;
  const base = `longformer(window=${w}${dil}${isCausal ? ', causal' : ''}`;
  if (o.global === undefined)
    return defineMask(local.expr, { name: `${base})`, layout: local.layout });
  const glob = globalTokens(o.global);
  return combine('union', [local, glob], `${base}, ${glob.name})`);
}
