import { SpecError } from './errors.js';
import { evalInterval, type Interval, RangeMinMax } from './expr/interval.js';
import { compileJs } from './expr/js.js';
import { type ExprNode, varsUsed } from './expr/nodes.js';

/** The shape a block layout is asked for. */
export interface LayoutContext {
  readonly seqQ: number;
  readonly seqKV: number;
  readonly blockQ: number;
  readonly blockKV: number;
  readonly batch: number;
  readonly headsQ: number;
}

/**
 * Which KV blocks each Q block visits, in CSR form. A layout has one slice per batch index and/or
 * query head only when the mask reads `b` and/or `h`; otherwise `batches`/`heads` is 1 and the one
 * slice serves all. Row `r = slice * numQBlocks + qBlock` lists ascending KV block indices in
 * `kvBlocks[rowStart[r] .. rowStart[r + 1])`. `full[i]` is 1 when every in-bounds element of that
 * block is unmasked (the kernel may skip the per-element mask; sequence bounds still apply).
 * Blocks not listed hold no unmasked element.
 */
export interface BlockLayout {
  readonly seqQ: number;
  readonly seqKV: number;
  readonly blockQ: number;
  readonly blockKV: number;
  readonly numQBlocks: number;
  readonly numKVBlocks: number;
  readonly batches: number;
  readonly heads: number;
  readonly rowStart: Int32Array;
  readonly kvBlocks: Int32Array;
  readonly full: Uint8Array;
}

/** A pattern's closed-form layout. It must agree exactly with the mask expression (tested). */
export type AnalyticLayout = (ctx: LayoutContext) => BlockLayout;

export const ceilDiv = (a: number, b: number): number => Math.floor((a + b - 1) / b);

/** Which slice of `layout` serves batch `b`, query head `h`. */
export function layoutSlice(layout: BlockLayout, b: number, h: number): number {
  return (layout.batches === 1 ? 0 : b) * layout.heads + (layout.heads === 1 ? 0 : h);
}

/**
 * A layout's column (transposed) view: for each slice and KV block, the Q blocks that visit it,
 * ascending, with the same `full` flags (CSR: `colStart` has slices·numKVBlocks + 1 entries). A
 * backward pass walks it to accumulate dk and dv per KV block over exactly the blocks the forward
 * visited.
 */
export interface LayoutColumns {
  readonly colStart: Int32Array;
  readonly qBlocks: Int32Array;
  readonly full: Uint8Array;
}

const columnCache = new WeakMap<BlockLayout, LayoutColumns>();

/** The column view of `layout` (computed once per layout and cached). */
export function layoutColumns(layout: BlockLayout): LayoutColumns {
  const hit = columnCache.get(layout);
  if (hit) return hit;
  const slices = layout.batches * layout.heads;
  const nq = layout.numQBlocks;
  const nk = layout.numKVBlocks;
  const { rowStart, kvBlocks } = layout;
  const colStart = new Int32Array(slices * nk + 1);
  for (let s = 0; s < slices; s++)
    for (let r = s * nq; r < (s + 1) * nq; r++)
      for (let e = rowStart[r] as number; e < (rowStart[r + 1] as number); e++)
        colStart[s * nk + (kvBlocks[e] as number) + 1]++;
  for (let c = 0; c < slices * nk; c++)
    colStart[c + 1] = (colStart[c + 1] as number) + (colStart[c] as number);
  const next = colStart.slice(0, slices * nk);
  const qBlocks = new Int32Array(kvBlocks.length);
  const full = new Uint8Array(kvBlocks.length);
  // Rows are walked in ascending Q-block order, so every column's list ascends.
  for (let s = 0; s < slices; s++)
    for (let qb = 0; qb < nq; qb++) {
      const r = s * nq + qb;
      for (let e = rowStart[r] as number; e < (rowStart[r + 1] as number); e++) {
        const c = s * nk + (kvBlocks[e] as number);
        const at = next[c] as number;
        next[c] = at + 1;
        qBlocks[at] = qb;
        full[at] = layout.full[e] as number;
      }
    }
  const columns = Object.freeze({ colStart, qBlocks, full });
  columnCache.set(layout, columns);
  return columns;
}

/** Appends rows in order (slice-major, then Q block); KV blocks within a row must ascend. */
export class BlockLayoutBuilder {
  private readonly shape: Omit<BlockLayout, 'rowStart' | 'kvBlocks' | 'full'>;
  private rowStart: number[] = [0];
  private kv: number[] = [];
  private fullFlags: number[] = [];
  private readonly rows: number;

  constructor(
    ctx: LayoutContext,
    slices: { batches: number; heads: number } = { batches: 1, heads: 1 },
  ) {
    for (const k of ['seqQ', 'seqKV', 'blockQ', 'blockKV'] as const) {
      if (!Number.isInteger(ctx[k]) || ctx[k] <= 0)
        throw new SpecError(`${k} must be a positive integer (got ${ctx[k]})`);
    }
    const numQBlocks = ceilDiv(ctx.seqQ, ctx.blockQ);
    const numKVBlocks = ceilDiv(ctx.seqKV, ctx.blockKV);
    this.shape = {
      seqQ: ctx.seqQ,
      seqKV: ctx.seqKV,
      blockQ: ctx.blockQ,
      blockKV: ctx.blockKV,
      numQBlocks,
      numKVBlocks,
      batches: slices.batches,
      heads: slices.heads,
    };
    this.rows = slices.batches * slices.heads * numQBlocks;
  }

  /** Adds KV block `kvBlock` to the current row. */
  push(kvBlock: number, full: boolean): void {
    const start = this.rowStart[this.rowStart.length - 1] as number;
    const last = this.kv.length > start ? (this.kv[this.kv.length - 1] as number) : -1;
    if (!Number.isInteger(kvBlock) || kvBlock <= last || kvBlock >= this.shape.numKVBlocks) {
      throw new SpecError(
        `layout row ${this.rowStart.length - 1}: KV block ${kvBlock} must be an integer in (${last}, ${this.shape.numKVBlocks})`,
      );
    }
    this.kv.push(kvBlock);
    this.fullFlags.push(full ? 1 : 0);
  }

  /** Adds blocks lo..hi-1 with one fullness. */
  pushRange(lo: number, hi: number, full: boolean): void {
    for (let j = lo; j < hi; j++) this.push(j, full);
  }

  endRow(): void {
    if (this.rowStart.length > this.rows)
      throw new SpecError(`layout has more than ${this.rows} rows`);
    this.rowStart.push(this.kv.length);
  }

  finish(): BlockLayout {
    if (this.rowStart.length !== this.rows + 1) {
      throw new SpecError(`layout has ${this.rowStart.length - 1} rows, expected ${this.rows}`);
    }
    return Object.freeze({
      ...this.shape,
      rowStart: Int32Array.from(this.rowStart),
      kvBlocks: Int32Array.from(this.kv),
      full: Uint8Array.from(this.fullFlags),
    });
  }
}

/** The layout of "no mask": every block visited and full. */
export function fullLayout(ctx: LayoutContext): BlockLayout {
  const b = new BlockLayoutBuilder(ctx);
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
  for (let i = 0; i < nq; i++) {
    b.pushRange(0, nk, true);
    b.endRow();
  }
  return b.finish();
}

/** Slices a mask needs: per batch if it reads `b`, per head if it reads `h`. */
export function maskSlices(
  mask: ExprNode | null,
  ctx: LayoutContext,
): { batches: number; heads: number } {
  const used = mask ? varsUsed(mask) : new Set();
  return { batches: used.has('b') ? ctx.batch : 1, heads: used.has('h') ? ctx.headsQ : 1 };
}

export type BlockClass = 'empty' | 'full' | 'partial';

/** Work done while deriving a layout, for tests and benchmarks. */
export interface LayoutCounters {
  intervalEvals: number;
  elementEvals: number;
}

/** Classifies one block by evaluating every in-bounds element; stops once it is partial. */
export function classifyBlock(
  counters: LayoutCounters | undefined,
  f: (b: number, h: number, q: number, kv: number, s: number) => number | boolean,
  b: number,
  h: number,
  q0: number,
  q1: number,
  k0: number,
  k1: number,
): BlockClass {
  let any = false;
  let all = true;
  let evals = 0;
  scan: for (let q = q0; q < q1; q++) {
    for (let kv = k0; kv < k1; kv++) {
      evals++;
      if (f(b, h, q, kv, 0)) any = true;
      else all = false;
      if (any && !all) break scan;
    }
  }
  if (counters) counters.elementEvals += evals;
  return any && !all ? 'partial' : all ? 'full' : 'empty';
}

/**
 * The exact layout of a mask expression, deriving each row without touching all N² elements:
 * a range of KV blocks is proved all-true or all-false by interval reasoning over its index box,
 * and split in two otherwise; a single block that interval reasoning cannot decide is classified
 * element by element. Work is about (visited blocks + boundary blocks) × log(KV blocks).
 */
export function deriveBlockLayout(
  mask: ExprNode | null,
  tensors: readonly (Float32Array | Int32Array)[],
  ctx: LayoutContext,
  counters?: LayoutCounters,
): BlockLayout {
  if (mask === null) return fullLayout(ctx);
  const slices = maskSlices(mask, ctx);
  const out = new BlockLayoutBuilder(ctx, slices);
  const ranges = tensors.map((t) => new RangeMinMax(t));
  const f = compileJs(mask, tensors);
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
  const pt = (x: number): Interval => ({ lo: x, hi: x, nan: false });

  for (let bi = 0; bi < slices.batches; bi++) {
    for (let hh = 0; hh < slices.heads; hh++) {
      for (let i = 0; i < nq; i++) {
        const q0 = i * ctx.blockQ;
        const q1 = Math.min(ctx.seqQ, q0 + ctx.blockQ);
        const qIv = { lo: q0, hi: q1 - 1, nan: false };
        const visit = (j0: number, j1: number): void => {
          const k0 = j0 * ctx.blockKV;
          const k1 = Math.min(ctx.seqKV, j1 * ctx.blockKV);
          if (counters) counters.intervalEvals++;
          const r = evalInterval(
            mask,
            { b: pt(bi), h: pt(hh), q: qIv, kv: { lo: k0, hi: k1 - 1, nan: false } },
            ranges,
          );
          if (r.hi === 0) return;
          if (r.lo === 1) {
            out.pushRange(j0, j1, true);
            return;
          }
          if (j1 - j0 > 1) {
            const mid = (j0 + j1) >>> 1;
            visit(j0, mid);
            visit(mid, j1);
            return;
          }
          const cell = classifyBlock(counters, f, bi, hh, q0, q1, k0, k1);
          if (cell !== 'empty') out.push(j0, cell === 'full');
        };
        visit(0, nk);
        out.endRow();
      }
    }
  }
  return out.finish();
}

/** The layout found by evaluating every element: O(N²), the yardstick for tests and small sizes. */
export function exactBlockLayout(
  mask: ExprNode | null,
  tensors: readonly (Float32Array | Int32Array)[],
  ctx: LayoutContext,
): BlockLayout {
  if (mask === null) return fullLayout(ctx);
  const slices = maskSlices(mask, ctx);
  const out = new BlockLayoutBuilder(ctx, slices);
  const f = compileJs(mask, tensors);
  const nq = ceilDiv(ctx.seqQ, ctx.blockQ);
  const nk = ceilDiv(ctx.seqKV, ctx.blockKV);
  for (let bi = 0; bi < slices.batches; bi++) {
    for (let hh = 0; hh < slices.heads; hh++) {
      for (let i = 0; i < nq; i++) {
        for (let j = 0; j < nk; j++) {
          const q0 = i * ctx.blockQ;
          const k0 = j * ctx.blockKV;
          const cell = classifyBlock(
            undefined,
            f,
            bi,
            hh,
            q0,
            Math.min(ctx.seqQ, q0 + ctx.blockQ),
            k0,
            Math.min(ctx.seqKV, k0 + ctx.blockKV),
          );
          if (cell !== 'empty') out.push(j, cell === 'full');
        }
        out.endRow();
      }
    }
  }
  return out.finish();
}

/** True when two layouts list the same blocks with the same fullness (slices broadcast). */
export function layoutsEqual(a: BlockLayout, b: BlockLayout): boolean {
  return layoutDifference(a, b) === null;
}

/** The first row where two layouts differ, described for a test failure; null when equal. */
export function layoutDifference(a: BlockLayout, b: BlockLayout): string | null {
  for (const k of ['seqQ', 'seqKV', 'blockQ', 'blockKV'] as const) {
    if (a[k] !== b[k]) return `${k} differs: ${a[k]} vs ${b[k]}`;
  }
  const batches = Math.max(a.batches, b.batches);
  const heads = Math.max(a.heads, b.heads);
  for (let bi = 0; bi < batches; bi++) {
    for (let h = 0; h < heads; h++) {
      const sa = layoutSlice(a, bi, h);
      const sb = layoutSlice(b, bi, h);
      for (let i = 0; i < a.numQBlocks; i++) {
        const ra = rowEntries(a, sa, i);
        const rb = rowEntries(b, sb, i);
        if (ra !== rb) return `b=${bi} h=${h} q-block ${i}: [${ra}] vs [${rb}]`;
      }
    }
  }
  return null;
}

function rowEntries(l: BlockLayout, slice: number, qBlock: number): string {
  const r = slice * l.numQBlocks + qBlock;
  const parts: string[] = [];
  for (let e = l.rowStart[r] as number; e < (l.rowStart[r + 1] as number); e++) {
    parts.push(`${l.kvBlocks[e]}${l.full[e] ? 'F' : 'p'}`);
  }
  return parts.join(' ');
}

export interface LayoutStats {
  /** Blocks visited, summed over every (batch, head). */
  readonly visitedBlocks: number;
  readonly fullBlocks: number;
  /** In-bounds (q, kv) pairs inside visited blocks, summed over every (batch, head): what a tiled kernel computes. */
  readonly computedPairs: number;
  /** computedPairs over batch × headsQ × seqQ × seqKV. */
  readonly density: number;
}

/** Counts what a tiled kernel does with `layout` for `batch` × `headsQ` heads. */
export function layoutStats(layout: BlockLayout, batch: number, headsQ: number): LayoutStats {
  const rep = (batch / layout.batches) * (headsQ / layout.heads);
  let visited = 0;
  let full = 0;
  let pairs = 0;
  const rows = layout.rowStart.length - 1;
  for (let r = 0; r < rows; r++) {
    const i = r % layout.numQBlocks;
    const qRows = Math.min(layout.seqQ, (i + 1) * layout.blockQ) - i * layout.blockQ;
    for (let e = layout.rowStart[r] as number; e < (layout.rowStart[r + 1] as number); e++) {
      const j = layout.kvBlocks[e] as number;
      const kCols = Math.min(layout.seqKV, (j + 1) * layout.blockKV) - j * layout.blockKV;
      visited++;
      full += layout.full[e] as number;
      pairs += qRows * kCols;
    }
  }
  const total = batch * headsQ * layout.seqQ * layout.seqKV;
  return {
    visitedBlocks: visited * rep,
    fullBlocks: full * rep,
    computedPairs: pairs * rep,
    density: (pairs * rep) / total,
  };
}
