import {
  BlockLayoutBuilder,
  ceilDiv,
  defineMask,
  type Expr,
  type LayoutContext,
  type Mask,
  SpecError,
  tensor,
  vars,
} from '@tessera/core';
import { lowerBound } from './layout-helpers.js';
import { nonNegativeInt, positiveInt } from './validate.js';

/** Above this many runs of consecutive global indices, membership is a table lookup. */
const MAX_INLINE_RUNS = 8;

/** A sorted set of token indices with O(log n) range counts. */
export class TokenSet {
  readonly sorted: Int32Array;
  /** Maximal runs of consecutive indices, flat [a0, b0, a1, b1, ...] (half-open). */
  readonly runs: number[];

  constructor(sorted: Int32Array) {
    this.sorted = sorted;
    const runs: number[] = [];
    for (const x of sorted) {
      const n = runs.length;
      if (n > 0 && runs[n - 1] === x) runs[n - 1] = x + 1;
      else runs.push(x, x + 1);
    }
    this.runs = runs;
  }

  /** How many members lie in [a, b). */
  count(a: number, b: number): number {
    return lowerBound(this.sorted, b) - lowerBound(this.sorted, a);
  }

  get max(): number {
    return this.sorted[this.sorted.length - 1] as number;
  }

  /** A bool expression: is index `x` a member? */
  contains(x: Expr): Expr {
    if (this.runs.length / 2 > MAX_INLINE_RUNS) {
      const flags = new Int32Array(this.max + 1);
      for (const g of this.sorted) flags[g] = 1;
      // Indices past the table read 0: not members.
      return tensor(flags).at(x).ne(0);
    }
    const parts: Expr[] = [];
    for (let e = 0; e < this.runs.length; e += 2) {
      const a = this.runs[e] as number;
      const b = this.runs[e + 1] as number;
      parts.push(b - a === 1 ? x.eq(a) : x.ge(a).and(x.lt(b)));
    }
    return parts.reduce((u, v) => u.or(v));
  }
}

/** Parses `indices | count` into a token set, with errors naming `where` and the parameter. */
export function tokenSet(where: string, name: string, tokens: unknown): TokenSet {
  if (typeof tokens === 'number') {
    const n = positiveInt(where, `${name} (a count)`, tokens);
    return new TokenSet(Int32Array.from({ length: n }, (_, i) => i));
  }
  if (!(Array.isArray(tokens) || tokens instanceof Int32Array) || tokens.length === 0) {
    throw new SpecError(
      `${where}: ${name} must be a positive count or a non-empty array of token indices`,
    );
  }
  const values = Array.from(tokens as ArrayLike<number>, (x, i) =>
    nonNegativeInt(where, `${name}[${i}]`, x),
  );
  const sorted = Int32Array.from(values).sort();
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1])
      throw new SpecError(`${where}: ${name} lists token ${sorted[i]} twice`);
  }
  return new TokenSet(sorted);
}

/** Rejects global tokens that are neither a query nor a key position. */
export function checkTokens(where: string, set: TokenSet, ctx: LayoutContext): void {
  if (set.max >= Math.max(ctx.seqQ, ctx.seqKV)) {
    throw new SpecError(
      `${where}: global token ${set.max} is outside the sequence (seqQ ${ctx.seqQ}, seqKV ${ctx.seqKV})`,
    );
  }
}

/**
 * Global tokens: every token in the set attends to all keys, and every query attends to it:
 * `q ∈ G || kv ∈ G`. Give the indices, or a count `n` for the first n tokens (G = {0, …, n−1}).
 * Indices must be distinct and inside the sequence the mask is used with.
 */
export function globalTokens(tokens: number | readonly number[] | Int32Array): Mask {
  const where = 'globalTokens';
  const set = tokenSet(where, 'tokens', tokens);
  const label =
    typeof tokens === 'number'
      ? `${tokens}`
      : `[${Array.from(set.sorted.subarray(0, 8)).join(',')}${set.sorted.length > 8 ? ',…' : ''}]`;
  return defineMask(set.contains(vars.q).or(set.contains(vars.kv)), {
    name: `global-tokens(${label})`,
    layout: (ctx) => {
      checkTokens(where, set, ctx);
      const { seqQ, seqKV, blockQ, blockKV } = ctx;
      const nq = ceilDiv(seqQ, blockQ);
      const nk = ceilDiv(seqKV, blockKV);
      const colFull = (j: number): boolean => {
        const k0 = j * blockKV;
        const k1 = Math.min(seqKV, k0 + blockKV);
        return set.count(k0, k1) === k1 - k0;
      };
      // KV blocks holding a global key: what every non-global row visits.
      const cols: number[] = [];
      for (let e = 0; e < set.runs.length; e += 2) {
        const a = set.runs[e] as number;
        const b = Math.min(set.runs[e + 1] as number, seqKV);
        if (a >= b) continue;
        for (let j = Math.floor(a / blockKV); j <= Math.floor((b - 1) / blockKV); j++) {
          if (cols[cols.length - 1] !== j) cols.push(j);
        }
      }
      const colsFull = cols.map(colFull);
      const out = new BlockLayoutBuilder(ctx);
      for (let i = 0; i < nq; i++) {
        const q0 = i * blockQ;
        const q1 = Math.min(seqQ, q0 + blockQ);
        const rowsGlobal = set.count(q0, q1);
        if (rowsGlobal > 0) {
          const allGlobal = rowsGlobal === q1 - q0;
          for (let j = 0; j < nk; j++) out.push(j, allGlobal || colFull(j));
        } else {
          cols.forEach((j, e) => {
            out.push(j, colsFull[e] as boolean);
          });
        }
        out.endRow();
      }
      return out.finish();
    },
  });
}
