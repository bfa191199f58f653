import type { Mask } from '@tessera/core';
import {
  bigBird,
  blockDiagonal,
  causal,
  chunkedCausal,
  difference,
  dilated,
  document,
  exponentialStride,
  full,
  globalTokens,
  intersect,
  longformer,
  not,
  prefixLM,
  primeStride,
  random,
  slidingWindow,
  strided,
  union,
} from '@tessera/patterns';

/** What a pattern is sized for. */
export interface PatternShape {
  readonly seqQ: number;
  readonly seqKV: number;
  readonly headsQ: number;
  readonly seed: number;
}

export interface PatternEntry {
  /** Part of the case id. */
  readonly name: string;
  /** The @tessera/patterns exports it calls (the catalogue must cover all of them). */
  readonly builders: readonly string[];
  /** Extra tags, e.g. 'masked-rows' when some rows are fully masked, 'per-head', 'tensor'. */
  readonly tags: readonly string[];
  make(s: PatternShape): Mask;
}

/** A window that is neither tiny nor the whole sequence, and odd-sized. */
const width = (s: PatternShape): number => Math.max(2, Math.floor(s.seqKV / 6) + 1);
const perHead = (s: PatternShape, f: (h: number) => number): number[] =>
  Array.from({ length: s.headsQ }, (_, h) => f(h));
const shorter = (s: PatternShape): number => Math.min(s.seqQ, s.seqKV);

/** Documents of lengths 1, 2, 3, ... cycling, covering both sequences. */
function documentIds(s: PatternShape): Int32Array {
  const n = Math.max(s.seqQ, s.seqKV);
  const ids = new Int32Array(n);
  let doc = 0;
  let left = 1;
  for (let t = 0; t < n; t++) {
    if (left === 0) {
      doc++;
      left = (doc % 7) + 1 + (doc % 3) * 5;
    }
    ids[t] = doc;
    left--;
  }
  return ids;
}

const entry = (
  name: string,
  builders: string[],
  make: (s: PatternShape) => Mask,
  tags: string[] = [],
): PatternEntry => ({ name, builders, make, tags });

/** Every pattern of @tessera/patterns, with parameters chosen from the sequence sizes. */
export const PATTERNS: readonly PatternEntry[] = [
  entry('full', ['full'], () => full()),
  entry('causal', ['causal'], () => causal()),
  entry('sliding-window', ['slidingWindow'], (s) => slidingWindow(width(s))),
  entry('sliding-window-symmetric', ['slidingWindow'], (s) =>
    slidingWindow(width(s), { causal: false }),
  ),
  entry(
    'sliding-window-per-head',
    ['slidingWindow'],
    (s) => slidingWindow(perHead(s, (h) => 1 + ((h * 5) % 9))),
    ['per-head', 'tensor'],
  ),
  entry('dilated', ['dilated'], (s) => dilated(width(s), 2)),
  entry(
    'dilated-symmetric-per-head',
    ['dilated'],
    (s) =>
      dilated(
        Math.max(2, width(s) >> 1),
        perHead(s, (h) => 1 + (h % 3)),
        { causal: false },
      ),
    ['per-head', 'tensor'],
  ),
  entry('strided', ['strided'], (s) => strided(Math.max(2, Math.floor(Math.sqrt(s.seqKV))))),
  entry('strided-symmetric', ['strided'], (s) =>
    strided(Math.max(2, Math.floor(Math.sqrt(s.seqKV)) - 1), { causal: false }),
  ),
  entry('exponential-stride', ['exponentialStride'], () => exponentialStride()),
  entry('exponential-stride-symmetric', ['exponentialStride'], () =>
    exponentialStride({ causal: false }),
  ),
  entry('prime-stride', ['primeStride'], (s) => primeStride(s.seqKV > 7 ? [3, 7] : [2, 5])),
  entry('global-tokens', ['globalTokens'], (s) =>
    globalTokens([0, Math.floor(shorter(s) / 2)].filter((x, i, a) => a.indexOf(x) === i)),
  ),
  entry('random-per-row', ['random'], (s) => random({ perRow: 3, seed: s.seed, seqKV: s.seqKV })),
  entry('random-density', ['random'], (s) => random({ density: 0.25, seed: s.seed })),
  entry('random-block-causal', ['random'], (s) =>
    random({ density: 0.5, block: 8, seed: s.seed, causal: true }),
  ),
  entry(
    'random-per-head',
    ['random'],
    (s) => random({ perRow: 2, seed: s.seed, seqKV: s.seqKV, perHead: true }),
    ['per-head'],
  ),
  entry('bigbird', ['bigBird'], (s) =>
    bigBird({
      window: 3,
      globalBlocks: 1,
      randomBlocks: 1,
      block: 8,
      seed: s.seed,
      seqKV: s.seqKV,
    }),
  ),
  entry('longformer', ['longformer'], (s) => longformer({ window: width(s), global: [0] })),
  entry(
    'longformer-causal-per-head',
    ['longformer'],
    (s) =>
      longformer({
        window: Math.max(2, width(s) >> 1),
        dilation: perHead(s, (h) => 1 + (h % 2)),
        global: 1,
        causal: true,
      }),
    ['per-head', 'tensor'],
  ),
  entry('prefix-lm', ['prefixLM'], (s) => prefixLM(Math.floor(shorter(s) / 3))),
  entry('document', ['document'], (s) => document(documentIds(s)), ['tensor']),
  entry('document-causal', ['document'], (s) => document(documentIds(s), { causal: true }), [
    'tensor',
  ]),
  entry('block-diagonal', ['blockDiagonal'], (s) => blockDiagonal(Math.max(2, width(s)))),
  entry('chunked-causal', ['chunkedCausal'], (s) => chunkedCausal(Math.max(2, width(s)))),
  entry('union', ['union', 'slidingWindow', 'globalTokens'], (s) =>
    union(slidingWindow(width(s)), globalTokens(2)),
  ),
  entry('intersect', ['intersect', 'causal', 'random'], (s) =>
    intersect(causal(), random({ density: 0.5, seed: s.seed })),
  ),
  // q − kv ≥ w: the first w rows see nothing.
  entry(
    'difference',
    ['difference', 'causal', 'slidingWindow'],
    (s) => difference(causal(), slidingWindow(width(s))),
    ['masked-rows'],
  ),
  // kv > q: the rows from seqKV − 1 on see nothing.
  entry('not', ['not', 'causal'], () => not(causal()), ['masked-rows']),
];

/** Every @tessera/patterns export that builds a mask (what the catalogue must cover). */
export const PATTERN_BUILDERS: readonly string[] = [
  ...new Set(PATTERNS.flatMap((p) => p.builders)),
].sort();
