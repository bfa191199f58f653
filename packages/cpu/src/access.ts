import { type AttentionSpec, elementIndex } from '@tessera/core';

/** Where the rows of one (batch, head) start in a tensor, and the distance between rows. */
export interface RowAccess {
  /** Offset of row 0 of (b, h). */
  base(b: number, h: number): number;
  /** Elements between row s and row s + 1 (columns are contiguous in both layouts). */
  readonly stride: number;
}

/** Row addressing of a tensor with `heads` heads, `seq` rows and `dim` columns in the spec's layout. */
export function rowAccess(
  layout: AttentionSpec['layout'],
  heads: number,
  seq: number,
  dim: number,
): RowAccess {
  const at = (b: number, h: number, s: number) => elementIndex(layout, heads, seq, dim, b, h, s, 0);
  return { base: (b, h) => at(b, h, 0), stride: at(0, 0, 1) - at(0, 0, 0) };
}

/** Row access for q, k, v and out of a spec. */
export function specAccess(spec: AttentionSpec): {
  q: RowAccess;
  k: RowAccess;
  v: RowAccess;
  out: RowAccess;
} {
  const { layout, headsQ, headsKV, seqQ, seqKV, headDim, headDimV } = spec;
  return {
    q: rowAccess(layout, headsQ, seqQ, headDim),
    k: rowAccess(layout, headsKV, seqKV, headDim),
    v: rowAccess(layout, headsKV, seqKV, headDimV),
    out: rowAccess(layout, headsQ, seqQ, headDimV),
  };
}

/** Σ a[ao + i] · b[bo + i] for i < n in f64, with four partial sums (shorter dependency chain). */
export function dot(
  a: ArrayLike<number>,
  ao: number,
  b: ArrayLike<number>,
  bo: number,
  n: number,
): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    s2 += a[ao + i + 2] * b[bo + i + 2];
    s3 += a[ao + i + 3] * b[bo + i + 3];
  }
  for (; i < n; i++) s0 += a[ao + i] * b[bo + i];
  return s0 + s1 + (s2 + s3);
}
