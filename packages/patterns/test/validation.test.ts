import { SpecError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import {
  bigBird,
  blockDiagonal,
  causal,
  chunkedCausal,
  dilated,
  document,
  exponentialStride,
  globalTokens,
  longformer,
  prefixLM,
  primeStride,
  random,
  render,
  slidingWindow,
  stats,
  strided,
} from '../src/index.js';
import { ctxOf } from './helpers.js';

const ctx = (seq: number, headsQ = 1) =>
  ctxOf({ seqQ: seq, seqKV: seq, blockQ: 16, blockKV: 16 }, headsQ);

/** [what is called, the message it must throw] */
const cases: [string, () => unknown, RegExp][] = [
  [
    'window 0',
    () => slidingWindow(0),
    /slidingWindow: window must be a positive integer \(got 0\)/,
  ],
  ['window negative', () => slidingWindow(-3), /window must be a positive integer \(got -3\)/],
  ['window fractional', () => slidingWindow(1.5), /window must be a positive integer \(got 1.5\)/],
  ['window NaN', () => slidingWindow(Number.NaN), /window must be a positive integer \(got NaN\)/],
  [
    'causal not boolean',
    () => slidingWindow(4, { causal: 'yes' as never }),
    /causal must be a boolean/,
  ],
  ['unknown option', () => slidingWindow(4, { casual: true } as never), /unknown option 'casual'/],
  [
    'per-head window empty',
    () => slidingWindow([]),
    /window must be a number or a non-empty array/,
  ],
  [
    'per-head window bad entry',
    () => slidingWindow([4, 0]),
    /window\[1\] must be a positive integer/,
  ],
  ['dilation 0', () => dilated(4, 0), /dilated: dilation must be a positive integer \(got 0\)/],
  [
    'per-head counts disagree',
    () => dilated([1, 2], [1, 2, 3]),
    /disagree on the head count \(2 vs 3\)/,
  ],
  [
    'per-head used with other head count',
    () => dilated(4, [1, 2]).layout?.(ctx(32, 3)),
    /dilated: has values for 2 query heads but is used with 3/,
  ],
  ['stride 0', () => strided(0), /strided: stride must be a positive integer \(got 0\)/],
  [
    'stride ≥ seqKV',
    () => strided(64).layout?.(ctx(64)),
    /strided: stride \(64\) must be smaller than seqKV \(64\)/,
  ],
  [
    'exponential options',
    () => exponentialStride({ causal: 1 as never }),
    /causal must be a boolean/,
  ],
  ['no primes', () => primeStride([]), /primes must be a non-empty array/],
  ['not a prime', () => primeStride([3, 4]), /primes\[1\] \(4\) is not a prime/],
  ['prime twice', () => primeStride([3, 3]), /prime 3 is listed twice/],
  [
    'prime ≥ seqKV',
    () => primeStride([3, 7]).layout?.(ctx(7)),
    /prime 7 \(7\) must be smaller than seqKV/,
  ],
  [
    'global count 0',
    () => globalTokens(0),
    /globalTokens: tokens \(a count\) must be a positive integer/,
  ],
  [
    'global negative index',
    () => globalTokens([3, -1]),
    /tokens\[1\] must be a non-negative integer/,
  ],
  ['global duplicate', () => globalTokens([2, 5, 2]), /lists token 2 twice/],
  ['global empty', () => globalTokens([]), /must be a positive count or a non-empty array/],
  [
    'global index outside the sequence',
    () => globalTokens([1, 100]).layout?.(ctx(64)),
    /global token 100 is outside the sequence \(seqQ 64, seqKV 64\)/,
  ],
  [
    'global count past the sequence',
    () => globalTokens(65).layout?.(ctx(64)),
    /global token 64 is outside/,
  ],
  ['random neither', () => random({ seed: 1 }), /give exactly one of perRow and density/],
  [
    'random both',
    () => random({ seed: 1, perRow: 2, density: 0.5 }),
    /exactly one of perRow and density/,
  ],
  [
    'random density 0',
    () => random({ seed: 1, density: 0 }),
    /density must be a number in \(0, 1\] \(got 0\)/,
  ],
  [
    'random density > 1',
    () => random({ seed: 1, density: 1.5 }),
    /density must be a number in \(0, 1\]/,
  ],
  [
    'random perRow 0',
    () => random({ seed: 1, perRow: 0, causal: true }),
    /perRow must be a positive integer/,
  ],
  ['random seed', () => random({ seed: 0.5, density: 0.5 }), /random: seed must be an integer/],
  [
    'random seed missing',
    () => random({ density: 0.5 } as never),
    /random: seed must be an integer/,
  ],
  [
    'random block',
    () => random({ seed: 1, density: 0.5, block: 0 }),
    /block must be a positive integer/,
  ],
  [
    'random perRow overflow',
    () =>
      random({ seed: 1, perRow: 4096, causal: true }).layout?.(
        ctxOf({ seqQ: 2 ** 20, seqKV: 2 ** 20, blockQ: 2 ** 20, blockKV: 2 ** 20 }),
      ),
    /perRow \(4096\) × key range \(1048576 units\) must stay below 2\^31/,
  ],
  [
    'prefix negative',
    () => prefixLM(-1),
    /prefixLM: prefixLen must be a non-negative integer \(got -1\)/,
  ],
  [
    'document empty',
    () => document(new Int32Array(0)),
    /document: ids must be a non-empty Int32Array/,
  ],
  [
    'document fractional id',
    () => document([0, 1.5]),
    /ids\[1\] must be an i32 integer \(got 1.5\)/,
  ],
  ['block-diagonal 0', () => blockDiagonal(0), /blockDiagonal: chunk must be a positive integer/],
  [
    'chunked-causal negative',
    () => chunkedCausal(-2),
    /chunkedCausal: chunk must be a positive integer/,
  ],
  [
    'longformer window',
    () => longformer({ window: 0 }),
    /longformer: window must be a positive integer/,
  ],
  [
    'longformer dilation',
    () => longformer({ window: 8, dilation: 0 }),
    /dilation must be a positive integer/,
  ],
  ['longformer global', () => longformer({ window: 8, global: [1, 1] }), /lists token 1 twice/],
  [
    'bigBird seqKV',
    () => bigBird({ window: 3, globalBlocks: 0, randomBlocks: 0, block: 8, seqKV: 0 }),
    /bigBird: seqKV must be a positive integer/,
  ],
  ['stats seqQ', () => stats(causal(), 0, 8), /stats: seqQ must be a positive integer \(got 0\)/],
  ['stats mask', () => stats({} as never, 8, 8), /stats: first argument must be a Mask/],
  [
    'stats option',
    () => stats(causal(), 8, 8, { block: 4 } as never),
    /stats: unknown option 'block'/,
  ],
  [
    'render size',
    () => render(causal(), 8, 8, { size: 0 }),
    /render: size must be a positive integer/,
  ],
  [
    'render one block size',
    () => render(causal(), 8, 8, { blockQ: 4 }),
    /give both blockQ and blockKV/,
  ],
  [
    'render head',
    () => render(causal(), 8, 8, { head: 2, headsQ: 2 }),
    /head \(2\) must be below headsQ \(2\)/,
  ],
];

describe('parameter validation', () => {
  it.each(cases)('%s: a SpecError naming the parameter', (_label, call, message) => {
    let caught: unknown;
    try {
      call();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(SpecError);
    expect((caught as Error).message).toMatch(message);
  });
});
