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
