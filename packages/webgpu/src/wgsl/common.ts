/** Pieces every generated module shares: tensor addressing by layout, and small text helpers. */
import type { AttentionSpec } from '@tessera/core';

/** A finite stand-in for -Infinity in scores (WGSL has no infinity literal). */
export const MASKED = '-3.0e38f';
/** Scores at or below this are treated as masked. */
export const MASKED_LIMIT = '-1.0e38f';
/** Bits of -Infinity, written to the LSE buffer (declared as u32) for a fully masked row. */
export const NEG_INF_BITS = '0xff800000u';

/** Strides, in elements, of one tensor of the spec: element (b, h, s, d) = b·batch + h·head + s·row + d. */
export interface Strides {
  readonly batch: number;
  readonly head: number;
  readonly row: number;
}

export function strides(
  layout: AttentionSpec['layout'],
  heads: number,
  seq: number,
  dim: number,
): Strides {
  return layout === 'bhsd'
    ? { batch: heads * seq * dim, head: seq * dim, row: dim }
    : { batch: seq * heads * dim, head: dim, row: heads * dim };
}

/** Strides of q, k, v and out for a spec. */
export function specStrides(spec: AttentionSpec): {
  q: Strides;
  k: Strides;
  v: Strides;
  out: Strides;
} {
  const { layout, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  return {
    q: strides(layout, H, SQ, D),
    k: strides(layout, HK, SK, D),
    v: strides(layout, HK, SK, DV),
    out: strides(layout, H, SQ, DV),
  };
}

export const ceil4 = (n: number): number => Math.ceil(n / 4) * 4;

export const indent = (text: string, spaces: number): string =>
  text
    .split('\n')
    .map((l) => (l.length > 0 ? ' '.repeat(spaces) + l : l))
    .join('\n');

/**
 * A counted loop, either as a WGSL `for` or unrolled with the counter replaced by literals
 * (`body` receives the counter's text). Unrolled loops keep private arrays in registers on
 * drivers that do not unroll by themselves.
 */
export function loop(
  counter: string,
  count: number,
  unroll: boolean,
  body: (i: string) => string[],
): string[] {
  if (count <= 0) return [];
  if (count === 1) return body('0u');
  if (unroll) {
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(...body(`${i}u`));
    return out;
  }
  return [
    `for (var ${counter} = 0u; ${counter} < ${count}u; ${counter}++) {`,
    ...body(counter).map((l) => `  ${l}`),
    '}',
  ];
}

/**
 * WGSL reading one vec4 of a tensor row: `name_buf` holds vec4s when `dim` is a multiple of 4,
 * else scalars (read one by one, zero past the row's end). `elem` is the storage type.
 */
export function rowLoader(fnName: string, buf: string, dim: number, elem: 'f32' | 'f16'): string {
  if (dim % 4 === 0) {
    return [
      `fn ${fnName}(row: u32, d4: u32) -> vec4<f32> {`,
      `  return vec4<f32>(${buf}[row / 4u + d4]);`,
      '}',
    ].join('\n');
  }
  const cast = elem === 'f32' ? '' : 'f32';
  return [
    `fn ${fnName}(row: u32, d4: u32) -> vec4<f32> {`,
    '  var r = vec4<f32>(0.0f);',
    '  for (var c = 0u; c < 4u; c++) {',
    '    let d = d4 * 4u + c;',
    `    if (d < ${dim}u) { r[c] = ${cast}(${buf}[row + d]); }`,
    '  }',
    '  return r;',
    '}',
  ].join('\n');
}

/** The storage array type of a tensor of row length `dim`. */
export const storageArray = (dim: number, elem: 'f32' | 'f16'): string =>
  dim % 4 === 0 ? `array<vec4<${elem}>>` : `array<${elem}>`;
