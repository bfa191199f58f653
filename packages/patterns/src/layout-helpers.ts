import {
  type BlockLayout,
  BlockLayoutBuilder,
  ceilDiv,
  type LayoutContext,
  type Mask,
  SpecError,
  type TensorRef,
} from '@tessera/core';
import { deriveBlockLayout, resolveTensors } from '@tessera/core/backend';

/** The block layout of any mask: its analytic layout, else core's interval-derived one. */
export function maskLayout(mask: Mask, ctx: LayoutContext): BlockLayout {
  if (mask.layout) return mask.layout(ctx);
  const slots: TensorRef[] = [];
  const node = resolveTensors(mask.expr.node, slots);
  return deriveBlockLayout(
    node,
    slots.map((t) => t.data),
    ctx,
  );
}

/** Checks that a per-head pattern with `n` heads is used with `n` query heads. */
export function checkHeads(where: string, ctx: LayoutContext, n: number): void {
  if (n !== 1 && ctx.headsQ !== n) {
    throw new SpecError(`${where}: has values for ${n} query heads but is used with ${ctx.headsQ}`);
  }
}

/**
 * A set of non-negative offsets `d = q − kv`, queried in O(1)-ish time so that a Toeplitz mask
 * (one that depends on q − kv only) gets its layout in time proportional to the visited blocks.
 */
export interface OffsetSet {
  /** Largest element ≤ x (x ≥ 0), or −1 when there is none. */
  prev(x: number): number;
  /** Smallest element ≥ x (x ≥ 0), or Infinity when there is none. */
  next(x: number): number;
  /** True when every integer in [lo, hi] (0 ≤ lo ≤ hi) is an element. */
  covers(lo: number, hi: number): boolean;
}

/** The offsets a Toeplitz mask allows: `half` for causal (d ≥ 0), `half ∪ −half` otherwise. */
class Offsets {
  constructor(
    private readonly half: OffsetSet,
    private readonly causal: boolean,
  ) {}

  /** Largest allowed offset ≤ x, or −Infinity. */
  prev(x: number): number {
    if (x >= 0) {
      const p = this.half.prev(x);
      if (p >= 0) return p;
      if (this.causal) return Number.NEGATIVE_INFINITY;
      return -this.half.next(1);
    }
    if (this.causal) return Number.NEGATIVE_INFINITY;
    return -this.half.next(-x);
  }

  covers(lo: number, hi: number): boolean {
    if (lo >= 0) return this.half.covers(lo, hi);
    if (this.causal) return false;
    if (hi <= 0) return this.half.covers(-hi, -lo);
    return this.half.covers(0, -lo) && this.half.covers(0, hi);
  }
}

/**
 * The exact layout of a Toeplitz mask `(q − kv) ∈ V`, one offset set per head (or one for all).
 * Each row walks only visited KV blocks: the largest offset at or below a block's offset range
 * either lies in it (visited) or says which block to jump to next. Cost O(visited blocks + rows).
 */
export function toeplitzLayout(
  ctx: LayoutContext,
  halves: readonly OffsetSet[],
  causal: boolean,
): BlockLayout {
  const heads = halves.length;
  const out = new BlockLayoutBuilder(ctx, { batches: 1, heads });
  const { seqQ, seqKV, blockQ, blockKV } = ctx;
  const nq = ceilDiv(seqQ, blockQ);
  const nk = ceilDiv(seqKV, blockKV);
  for (let h = 0; h < heads; h++) {
    const v = new Offsets(halves[h] as OffsetSet, causal);
    for (let i = 0; i < nq; i++) {
      const q0 = i * blockQ;
      const qLast = Math.min(seqQ, q0 + blockQ) - 1;
      let j = 0;
      while (j < nk) {
        const k0 = j * blockKV;
        const kLast = Math.min(seqKV, k0 + blockKV) - 1;
        const lo = q0 - kLast;
        const hi = qLast - k0;
        const d = v.prev(hi);
        if (d >= lo) {
          out.push(j, v.covers(lo, hi));
          j++;
        } else {
          // The next block that can hold offset d is the one holding kv = q0 − d (if any).
          const kv = q0 - d;
          if (kv >= seqKV) break;
          j = Math.floor(kv / blockKV);
        }
      }
      out.endRow();
    }
  }
  return out.finish();
}

/**
 * Per-row accumulator of unmasked-element counts by KV block: a block is full when its count
 * reaches its area. Callers add disjoint column intervals with a weight (rows they cover).
 */
export class BlockCounter {
  private readonly counts: Float64Array;
  private readonly touched: number[] = [];
  private readonly seen: Uint8Array;

  constructor(private readonly ctx: LayoutContext) {
    const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
    this.counts = new Float64Array(nk);
    this.seen = new Uint8Array(nk);
  }

  /** Adds `weight` unmasked elements to every column in [c0, c1) (clipped to seqKV). */
  add(weight: number, c0: number, c1: number): void {
    const { blockKV, seqKV } = this.ctx;
    const end = Math.min(c1, seqKV);
    const start = Math.max(c0, 0);
    if (start >= end) return;
    const jLast = Math.floor((end - 1) / blockKV);
    for (let j = Math.floor(start / blockKV); j <= jLast; j++) {
      const overlap = Math.min(end, (j + 1) * blockKV) - Math.max(start, j * blockKV);
      this.counts[j] = (this.counts[j] as number) + weight * overlap;
      if (this.seen[j] === 0) {
        this.seen[j] = 1;
        this.touched.push(j);
      }
    }
  }

  /** Marks a block visited without counting (for patterns that decide fullness themselves). */
  touch(j: number): void {
    if (this.seen[j] === 0) {
      this.seen[j] = 1;
      this.touched.push(j);
    }
  }

  /** Emits the touched blocks of the row in ascending order and resets. */
  flush(out: BlockLayoutBuilder, rows: number, isFull?: (j: number) => boolean): void {
    const { blockKV, seqKV } = this.ctx;
    const t = this.touched;
    if (t.length > 1) t.sort((a, b) => a - b);
    for (const j of t) {
      const cols = Math.min(seqKV, (j + 1) * blockKV) - j * blockKV;
      out.push(j, isFull ? isFull(j) : this.counts[j] === rows * cols);
      this.counts[j] = 0;
      this.seen[j] = 0;
    }
    t.length = 0;
    out.endRow();
  }
}

/**
 * Unit intervals a pattern chooses for one query unit: a flat list [a0, b0, a1, b1, ...] of
 * disjoint, half-open ranges of key units.
 */
export type UnitRows = (head: number, qUnit: number) => readonly number[];

/**
 * The exact layout of a mask that is a function of (q div unit, kv div unit): `rows` lists, for
 * each query unit, the key-unit intervals it attends. Works for any layout block sizes (unit
 * and blocks need not divide each other). Cost O(chosen intervals × blocks they span).
 */
export function unitLayout(
  ctx: LayoutContext,
  unit: number,
  heads: number,
  rows: UnitRows,
): BlockLayout {
  const out = new BlockLayoutBuilder(ctx, { batches: 1, heads });
  const counter = new BlockCounter(ctx);
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  for (let h = 0; h < heads; h++) {
    let memoUnit = -1;
    let memo: readonly number[] = [];
    for (let i = 0; i < nq; i++) {
      const q0 = i * ctx.blockQ;
      const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
      for (let u = Math.floor(q0 / unit); u * unit < q1; u++) {
        const weight = Math.min(q1, (u + 1) * unit) - Math.max(q0, u * unit);
        if (u !== memoUnit) {
          memo = rows(h, u);
          memoUnit = u;
        }
        for (let e = 0; e + 1 < memo.length; e += 2) {
          counter.add(weight, (memo[e] as number) * unit, (memo[e + 1] as number) * unit);
        }
      }
      counter.flush(out, q1 - q0);
    }
  }
  return out.finish();
}

/** Sorts and merges half-open intervals given as a flat [a0, b0, a1, b1, ...] list. */
export function mergeIntervals(flat: readonly number[]): number[] {
  const pairs: [number, number][] = [];
  for (let e = 0; e + 1 < flat.length; e += 2) {
    const a = flat[e] as number;
    const b = flat[e + 1] as number;
    if (a < b) pairs.push([a, b]);
  }
  pairs.sort((x, y) => x[0] - y[0]);
  const merged: number[] = [];
  for (const [a, b] of pairs) {
    const n = merged.length;
    if (n > 0 && a <= (merged[n - 1] as number)) {
      merged[n - 1] = Math.max(merged[n - 1] as number, b);
    } else {
      merged.push(a, b);
    }
  }
  return merged;
}

/** First index i with sorted[i] ≥ x. */
export function lowerBound(sorted: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The layout of a mask whose unmasked columns in each Q block form one interval: `cols(q0, q1)`
 * gives that interval [lo, hi) for rows [q0, q1), and `isFull` decides each listed block.
 * Every block overlapping the interval must hold an unmasked element (the caller proves it).
 */
export function intervalLayout(
  ctx: LayoutContext,
  cols: (q0: number, q1: number) => readonly [number, number],
  isFull: (q0: number, q1: number, k0: number, k1: number) => boolean,
): BlockLayout {
  const out = new BlockLayoutBuilder(ctx);
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  for (let i = 0; i < nq; i++) {
    const q0 = i * ctx.blockQ;
    const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
    const [lo, hi] = cols(q0, q1);
    const end = Math.min(hi, ctx.seqKV);
    if (lo < end) {
      const jLast = Math.floor((end - 1) / ctx.blockKV);
      for (let j = Math.floor(Math.max(lo, 0) / ctx.blockKV); j <= jLast; j++) {
        const k0 = j * ctx.blockKV;
        out.push(j, isFull(q0, q1, k0, Math.min(ctx.seqKV, k0 + ctx.blockKV)));
      }
    }
    out.endRow();
  }
  return out.finish();
}
