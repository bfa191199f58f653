import {
  type BlockLayout,
  BlockLayoutBuilder,
  ceilDiv,
  defineMask,
  type Expr,
  hash,
  type LayoutContext,
  lit,
  type Mask,
  SpecError,
  vars,
} from '@tessera/core';
import { classifyBlock, hashU32 } from '@tessera/core/backend';
import { unitLayout } from './layout-helpers.js';
import { bool, options, positiveInt, seedInt } from './validate.js';

export interface RandomOptions {
  /** Each query row (or query block) picks this many keys (or key blocks). */
  readonly perRow?: number;
  /** Each (q, kv) pair (or block pair) is unmasked with this probability, in (0, 1]. */
  readonly density?: number;
  /** Any i32: the pattern is a function of the seed and the indices alone. */
  readonly seed: number;
  /** Draw per (q-block, kv-block) of this size instead of per element (default 1). */
  readonly block?: number;
  /** Only keys at or before the query (at the granularity of `block`). Default false. */
  readonly causal?: boolean;
  /** The key length the mask is used with; required by non-causal `perRow` (the draw's range). */
  readonly seqKV?: number;
  /** A different draw for each query head (the layout then has one slice per head). */
  readonly perHead?: boolean;
}

/** 2^24: turns the hash's 24-bit fraction back into its integer. */
const HASH_STEPS = 16777216;

/** The parts of a random pattern that BigBird reuses. */
export interface RandomParts {
  readonly expr: Expr;
  readonly name: string;
  readonly unit: number;
  readonly perHead: boolean;
  /** Throws if the pattern cannot be used with this context. */
  check(ctx: LayoutContext): void;
  /** Key-unit intervals that query unit `qu` of head `h` attends (flat [a, b, ...], ascending). */
  rows(h: number, qu: number, ctx: LayoutContext): number[];
}

export function randomParts(where: string, raw: unknown): RandomParts {
  const o = options<RandomOptions>(where, raw, [
    'perRow',
    'density',
    'seed',
    'block',
    'causal',
    'seqKV',
    'perHead',
  ]);
  if ((o.perRow === undefined) === (o.density === undefined)) {
    throw new SpecError(`${where}: give exactly one of perRow and density`);
  }
  const seed = seedInt(where, o.seed);
  const unit = o.block === undefined ? 1 : positiveInt(where, 'block', o.block);
  const isCausal = bool(where, 'causal', o.causal, false);
  const perHead = bool(where, 'perHead', o.perHead, false);
  const seqKV = o.seqKV === undefined ? undefined : positiveInt(where, 'seqKV', o.seqKV);
  const { h, q, kv } = vars;
  const qu = unit === 1 ? q : q.div(unit);
  const ku = unit === 1 ? kv : kv.div(unit);
  const args = (x: Expr): Expr[] => (perHead ? [lit(seed), h, qu, x] : [lit(seed), qu, x]);
  const jsArgs = (hh: number, a: number, x: number): number[] =>
    perHead ? [seed, hh, a, x] : [seed, a, x];
  const tags = [
    o.perRow !== undefined ? `perRow=${o.perRow}` : `density=${o.density}`,
    `seed=${seed}`,
    ...(unit > 1 ? [`block=${unit}`] : []),
    ...(isCausal ? ['causal'] : []),
    ...(perHead ? ['per-head'] : []),
  ];
  const name = `random(${tags.join(', ')})`;
  const checkSeq = (ctx: LayoutContext): void => {
    if (seqKV !== undefined && ctx.seqKV !== seqKV) {
      throw new SpecError(`${where}: built for seqKV ${seqKV} but used with seqKV ${ctx.seqKV}`);
    }
  };

  if (o.density !== undefined) {
    const p = o.density;
    if (typeof p !== 'number' || !(p > 0 && p <= 1)) {
      throw new SpecError(`${where}: density must be a number in (0, 1] (got ${String(p)})`);
    }
    const pf = Math.fround(p);
    let expr = hash(...args(ku)).lt(lit(p, 'f32'));
    if (isCausal) expr = ku.le(qu).and(expr);
    const on = (hh: number, a: number, x: number): boolean =>
      (!isCausal || x <= a) && (hashU32(jsArgs(hh, a, x)) >>> 8) / HASH_STEPS < pf;
    return {
      expr,
      name,
      unit,
      perHead,
      check: checkSeq,
      rows(hh, a, ctx) {
        const out: number[] = [];
        const n = ceilDiv(ctx.seqKV, unit);
        for (let x = 0; x < n; x++) {
          if (!on(hh, a, x)) continue;
          const len = out.length;
          if (len > 0 && out[len - 1] === x) out[len - 1] = x + 1;
          else out.push(x, x + 1);
        }
        return out;
      },
    };
  }

  const k = positiveInt(where, 'perRow', o.perRow);
  if (!isCausal && seqKV === undefined) {
    throw new SpecError(
      `${where}: perRow without causal needs seqKV (the key range each row draws from)`,
    );
  }
  const keyUnits = seqKV === undefined ? 0 : ceilDiv(seqKV, unit);
  // Stratified draw: the M key units split into k strata [⌊iM/k⌋, ⌊(i+1)M/k⌋); one pick in each.
  const M = isCausal ? qu.add(1) : lit(keyUnits);
  const stratum = ku.add(1).mul(k).sub(1).div(M);
  const lo = stratum.mul(M).div(k);
  const size = stratum.add(1).mul(M).div(k).sub(lo);
  const r = hash(...args(stratum))
    .mul(HASH_STEPS)
    .toInt();
  const expr = ku.lt(M).and(ku.eq(lo.add(r.mod(size))));
  return {
    expr,
    name,
    unit,
    perHead,
    check(ctx) {
      checkSeq(ctx);
      const range = isCausal ? ceilDiv(ctx.seqQ, unit) : keyUnits;
      if (range * k > 2147483647) {
        throw new SpecError(
          `${where}: perRow (${k}) × key range (${range} units) must stay below 2^31`,
        );
      }
    },
    rows(hh, a) {
      const m = isCausal ? a + 1 : keyUnits;
      const out: number[] = [];
      for (let i = 0; i < k; i++) {
        const s0 = Math.floor((i * m) / k);
        const n = Math.floor(((i + 1) * m) / k) - s0;
        if (n === 0) continue;
        const pick = s0 + ((hashU32(jsArgs(hh, a, i)) >>> 8) % n);
        out.push(pick, pick + 1);
      }
      return out;
    },
  };
}

/**
 * Random attention, reproducible from the seed alone (core's counter hash; no index tables), with
 * `u = block` (default 1), `qu = ⌊q/u⌋`, `ku = ⌊kv/u⌋`:
 * - `density: p`: (q, kv) is unmasked when `hash(seed, qu, ku) < p` (p rounded to f32).
 * - `perRow: k`: query unit qu draws k key units from its range of M units — `[0, qu]` when causal,
 *   else all `⌈seqKV/u⌉` key units (`seqKV` is then required). The range is cut into k strata
 *   `[⌊iM/k⌋, ⌊(i+1)M/k⌋)` and stratum i contributes the unit `⌊iM/k⌋ + (hash(seed, qu, i)·2^24) mod size`,
 *   so every row gets exactly min(k, M) distinct keys, spread over the whole range.
 * `causal` also requires `ku ≤ qu`; `perHead` adds `h` to the hash arguments.
 *
 * Layout cost: `perRow` computes each row's picks directly, O(seqQ/u × k); block `density` hashes
 * every block pair, O((seqQ/u)·(seqKV/u)); element `density` classifies each layout block by
 * evaluating elements until it has seen both an unmasked and a masked one, about
 * (1/p + 1/(1−p)) evaluations per block, but a whole block's worth where p is near 0 or 1.
 */
export function random(opts: RandomOptions): Mask {
  const where = 'random';
  const parts = randomParts(where, opts);
  const o = opts as RandomOptions;
  const perElementDensity = o.density !== undefined && parts.unit === 1;
  return defineMask(parts.expr, {
    name: parts.name,
    layout: (ctx): BlockLayout => {
      parts.check(ctx);
      const heads = parts.perHead ? ctx.headsQ : 1;
      if (!perElementDensity) {
        return unitLayout(ctx, parts.unit, heads, (hh, qu) => parts.rows(hh, qu, ctx));
      }
      return classifiedLayout(ctx, heads, parts, o);
    },
  });
}

/** Element-wise density: classify each block by reading elements until it is known partial. */
function classifiedLayout(
  ctx: LayoutContext,
  heads: number,
  parts: RandomParts,
  o: RandomOptions,
): BlockLayout {
  const isCausal = o.causal === true;
  const pf = Math.fround(o.density as number);
  const seed = o.seed;
  const args = parts.perHead ? [seed, 0, 0, 0] : [seed, 0, 0];
  const f = (_b: number, hh: number, q: number, kv: number): boolean => {
    if (isCausal && kv > q) return false;
    const n = args.length;
    if (parts.perHead) args[1] = hh;
    args[n - 2] = q;
    args[n - 1] = kv;
    return (hashU32(args) >>> 8) / HASH_STEPS < pf;
  };
  const out = new BlockLayoutBuilder(ctx, { batches: 1, heads });
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
  for (let hh = 0; hh < heads; hh++) {
    for (let i = 0; i < nq; i++) {
      const q0 = i * ctx.blockQ;
      const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
      for (let j = 0; j < nk; j++) {
        const k0 = j * ctx.blockKV;
        if (isCausal && k0 > q1 - 1) break;
        const k1 = Math.min(ctx.seqKV, k0 + ctx.blockKV);
        const cls =
          pf >= 1 && !isCausal ? 'full' : classifyBlock(undefined, f, 0, hh, q0, q1, k0, k1);
        if (cls !== 'empty') out.push(j, cls === 'full');
      }
      out.endRow();
    }
  }
  return out.finish();
}
