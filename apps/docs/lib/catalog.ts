// The patterns the gallery draws and the playground offers: how to build each from its
// parameters, and the @tessera/patterns call that does it (shown to readers and checked by a test
// to build the very same mask).
import type { Mask } from '@tessera/core';
import {
  bigBird,
  blockDiagonal,
  causal,
  chunkedCausal,
  dilated,
  document,
  exponentialStride,
  full,
  globalTokens,
  longformer,
  prefixLM,
  primeStride,
  random,
  slidingWindow,
  strided,
  union,
} from '@tessera/patterns';

export interface ParamDef {
  readonly key: string;
  readonly label: string;
  readonly default: number;
  readonly min: number;
  readonly max: number;
  /** 'bool' params are 0 or 1 and shown as a checkbox. */
  readonly kind?: 'int' | 'bool';
}

export type Params = Readonly<Record<string, number>>;

export interface PatternEntry {
  readonly id: string;
  readonly title: string;
  readonly summary: string;
  readonly params: readonly ParamDef[];
  /** The mask for a sequence of `seq` tokens (random draws need the key length). */
  build(p: Params, seq: number): Mask;
  /** The @tessera/patterns expression that builds the same mask. */
  code(p: Params, seq: number): string;
}

const int = (key: string, label: string, def: number, min: number, max: number): ParamDef => ({
  key,
  label,
  default: def,
  min,
  max,
  kind: 'int',
});
const flag = (key: string, label: string, def: boolean): ParamDef => ({
  key,
  label,
  default: def ? 1 : 0,
  min: 0,
  max: 1,
  kind: 'bool',
});

/** Document ids for `seq` tokens cut into documents of `len` tokens (the last one shorter). */
export const documentIds = (seq: number, len: number): Int32Array =>
  Int32Array.from({ length: seq }, (_, t) => Math.floor(t / len));

export const catalog: readonly PatternEntry[] = [
  {
    id: 'full',
    title: 'Full (dense)',
    summary:
      'No mask: every query sees every key. The baseline every other pattern is measured against.',
    params: [],
    build: () => full(),
    code: () => 'full()',
  },
  {
    id: 'causal',
    title: 'Causal',
    summary: 'Autoregressive decoding: query q sees keys kv ≤ q.',
    params: [],
    build: () => causal(),
    code: () => 'causal()',
  },
  {
    id: 'sliding-window',
    title: 'Sliding window',
    summary:
      'Each query sees itself and the keys just before it, up to the window width (Mistral; Longformer’s local part).',
    params: [int('window', 'window', 32, 1, 4096), flag('causal', 'causal', true)],
    build: (p) => slidingWindow(p.window, { causal: p.causal === 1 }),
    code: (p) => `slidingWindow(${p.window}, { causal: ${p.causal === 1} })`,
  },
  {
    id: 'dilated',
    title: 'Dilated window',
    summary: 'Window keys spaced a dilation apart: a wider reach for the same number of keys.',
    params: [int('window', 'window', 16, 1, 1024), int('dilation', 'dilation', 3, 1, 64)],
    build: (p) => dilated(p.window, p.dilation),
    code: (p) => `dilated(${p.window}, ${p.dilation})`,
  },
  {
    id: 'strided',
    title: 'Strided (Sparse Transformer)',
    summary: 'A local window as wide as the stride, plus every stride-th key before it.',
    params: [int('stride', 'stride', 16, 2, 1024)],
    build: (p) => strided(p.stride),
    code: (p) => `strided(${p.stride})`,
  },
  {
    id: 'exponential-stride',
    title: 'Exponential stride (LogSparse)',
    summary: 'Keys at distance 0, 1, 2, 4, 8, …: O(log N) keys per query.',
    params: [],
    build: () => exponentialStride(),
    code: () => 'exponentialStride()',
  },
  {
    id: 'prime-stride',
    title: 'Prime strides',
    summary: 'Keys at multiples of 7 or 11 before the query: two periods that never line up.',
    params: [],
    build: () => primeStride([7, 11]),
    code: () => 'primeStride([7, 11])',
  },
  {
    id: 'global-tokens',
    title: 'Global tokens + window',
    summary:
      'The first few tokens see and are seen by all; everything else uses a symmetric window.',
    params: [int('global', 'global tokens', 4, 1, 256), int('window', 'window', 16, 1, 4096)],
    build: (p) => union(globalTokens(p.global), slidingWindow(p.window, { causal: false })),
    code: (p) => `union(globalTokens(${p.global}), slidingWindow(${p.window}, { causal: false }))`,
  },
  {
    id: 'prefix-lm',
    title: 'Prefix LM',
    summary: 'A bidirectional prefix, causal after it (T5, UniLM).',
    params: [int('prefix', 'prefix length', 64, 0, 65536)],
    build: (p) => prefixLM(p.prefix),
    code: (p) => `prefixLM(${p.prefix})`,
  },
  {
    id: 'block-diagonal',
    title: 'Block diagonal',
    summary: 'The sequence cut into independent chunks.',
    params: [int('chunk', 'chunk', 64, 1, 65536)],
    build: (p) => blockDiagonal(p.chunk),
    code: (p) => `blockDiagonal(${p.chunk})`,
  },
  {
    id: 'chunked-causal',
    title: 'Chunked causal',
    summary: 'Causal attention inside fixed-size chunks (Llama 4’s chunked attention).',
    params: [int('chunk', 'chunk', 64, 1, 65536)],
    build: (p) => chunkedCausal(p.chunk),
    code: (p) => `chunkedCausal(${p.chunk})`,
  },
  {
    id: 'document',
    title: 'Packed documents',
    summary: 'Several documents packed into one sequence; tokens see their own document only.',
    params: [int('docLen', 'document length', 48, 1, 65536), flag('causal', 'causal', true)],
    build: (p, seq) => document(documentIds(seq, p.docLen), { causal: p.causal === 1 }),
    code: (p, seq) =>
      `document(Int32Array.from({ length: ${seq} }, (_, t) => Math.floor(t / ${p.docLen})), { causal: ${p.causal === 1} })`,
  },
  {
    id: 'random',
    title: 'Random blocks',
    summary:
      'Each query block sees a few random key blocks, drawn by a seeded hash every backend reproduces.',
    params: [
      int('perRow', 'blocks per row', 3, 1, 64),
      int('block', 'block', 16, 1, 1024),
      int('maskSeed', 'mask seed', 1, 0, 2147483647),
    ],
    build: (p, seq) => random({ perRow: p.perRow, block: p.block, seed: p.maskSeed, seqKV: seq }),
    code: (p, seq) =>
      `random({ perRow: ${p.perRow}, block: ${p.block}, seed: ${p.maskSeed}, seqKV: ${seq} })`,
  },
  {
    id: 'bigbird',
    title: 'BigBird',
    summary: 'Sliding blocks, global blocks and random blocks (BigBird ITC).',
    params: [
      int('window', 'window (blocks, odd)', 3, 1, 63),
      int('globalBlocks', 'global blocks', 1, 0, 64),
      int('randomBlocks', 'random blocks', 2, 0, 64),
      int('block', 'block', 16, 1, 1024),
      int('maskSeed', 'mask seed', 1, 0, 2147483647),
    ],
    build: (p, seq) =>
      bigBird({
        window: p.window,
        globalBlocks: p.globalBlocks,
        randomBlocks: p.randomBlocks,
        block: p.block,
        seed: p.maskSeed,
        seqKV: seq,
      }),
    code: (p, seq) =>
      `bigBird({ window: ${p.window}, globalBlocks: ${p.globalBlocks}, randomBlocks: ${p.randomBlocks}, block: ${p.block}, seed: ${p.maskSeed}, seqKV: ${seq} })`,
  },
  {
    id: 'longformer',
    title: 'Longformer',
    summary: 'A symmetric (optionally dilated) window plus global tokens.',
    params: [
      int('window', 'window', 32, 1, 4096),
      int('dilation', 'dilation', 1, 1, 64),
      int('global', 'global tokens', 2, 0, 256),
    ],
    build: (p) =>
      longformer({
        window: p.window,
        dilation: p.dilation,
        ...(p.global > 0 ? { global: p.global } : {}),
      }),
    code: (p) =>
      `longformer({ window: ${p.window}, dilation: ${p.dilation}${p.global > 0 ? `, global: ${p.global}` : ''} })`,
  },
];

export function findPattern(id: string): PatternEntry | undefined {
  return catalog.find((e) => e.id === id);
}

export function defaultParams(entry: PatternEntry): Record<string, number> {
  return Object.fromEntries(entry.params.map((d) => [d.key, d.default]));
}
