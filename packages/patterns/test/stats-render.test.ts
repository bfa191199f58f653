import { compileMask, type Mask } from '@tessera/core';
import fc from 'fast-check';
import { decode } from 'fast-png';
import { describe, expect, it } from 'vitest';
import {
  bigBird,
  causal,
  dilated,
  globalTokens,
  longformer,
  render,
  renderSvg,
  slidingWindow,
  stats,
  union,
} from '../src/index.js';
import { ctxOf, exactLayout, sizes } from './helpers.js';

const masks: [string, Mask, number][] = [
  ['causal', causal(), 1],
  ['window', slidingWindow(7, { causal: false }), 1],
  ['per-head dilation', dilated(5, [1, 2, 3]), 3],
  ['longformer', longformer({ window: 6, dilation: 2, global: [0, 5] }), 1],
  [
    'bigbird',
    bigBird({ window: 3, globalBlocks: 1, randomBlocks: 1, block: 4, seed: 9, seqKV: 48 }),
    1,
  ],
];

describe('stats', () => {
  it('counts unmasked pairs, visited blocks and density like a brute-force count', () => {
    fc.assert(
      fc.property(sizes(48), fc.constantFrom(...masks), (s, [, mask, heads]) => {
        const seqKV = mask.name.startsWith('bigbird') ? 48 : s.seqKV;
        const ctx = ctxOf({ ...s, seqKV }, heads);
        const got = stats(mask, ctx.seqQ, seqKV, {
          blockQ: s.blockQ,
          blockKV: s.blockKV,
          headsQ: heads,
          batch: 2,
        });
        const f = compileMask(mask);
        let pairs = 0;
        for (let h = 0; h < heads; h++)
          for (let q = 0; q < ctx.seqQ; q++)
            for (let kv = 0; kv < seqKV; kv++) if (f(0, h, q, kv)) pairs++;
        const exact = exactLayout(mask, ctx);
        const visited = exact.kvBlocks.length * (heads / exact.heads);
        let full = 0;
        for (const x of exact.full) full += x;
        full *= heads / exact.heads;
        expect(got.unmaskedPairs).toBe(2 * pairs);
        expect(got.totalPairs).toBe(2 * heads * ctx.seqQ * seqKV);
        expect(got.density).toBeCloseTo(pairs / (heads * ctx.seqQ * seqKV), 12);
        expect(got.visitedBlocks).toBe(2 * visited);
        expect(got.fullBlocks).toBe(2 * full);
        expect(got.partialBlocks).toBe(2 * (visited - full));
        const grid = Math.ceil(ctx.seqQ / s.blockQ) * Math.ceil(seqKV / s.blockKV);
        expect(got.totalBlocks).toBe(2 * heads * grid);
        expect(got.computedPairs).toBeGreaterThanOrEqual(got.unmaskedPairs);
      }),
      { numRuns: 100, seed: 601 },
    );
  });
});

describe('render', () => {
  it('draws one pixel per element at size = seq: ink where unmasked, white elsewhere', () => {
    const mask = union(slidingWindow(5), globalTokens([3]));
    const pic = render(mask, 40, 40, { size: 40 });
    expect([pic.width, pic.height]).toEqual([40, 40]);
    const png = decode(pic.png);
    expect([png.width, png.height, png.channels]).toEqual([40, 40, 4]);
    expect(Array.from(png.data)).toEqual(Array.from(pic.rgba));
    const f = compileMask(mask);
    for (let q = 0; q < 40; q++) {
      for (let kv = 0; kv < 40; kv++) {
        const p = (q * 40 + kv) * 4;
        const px = Array.from(pic.rgba.subarray(p, p + 4));
        expect(px).toEqual(f(0, 0, q, kv) ? [28, 56, 121, 255] : [255, 255, 255, 255]);
      }
    }
  });

  it('shades visited blocks and keeps the aspect ratio', () => {
    const pic = render(causal(), 32, 64, { size: 128, blockQ: 16, blockKV: 16 });
    expect([pic.width, pic.height]).toEqual([128, 64]);
    const at = (x: number, y: number) =>
      Array.from(pic.rgba.subarray((y * 128 + x) * 4, (y * 128 + x) * 4 + 3));
    expect(at(100, 10)).toEqual([255, 255, 255]); // unvisited block above the diagonal
    expect(at(20, 10)).toEqual([253, 236, 200]); // masked element inside a partial block
    expect(at(5, 50)).toEqual([28, 56, 121]); // unmasked element
  });

  it('averages cells when the picture is smaller than the mask', () => {
    const pic = render(causal(), 1000, 1000, { size: 10 });
    // Diagonal pixels are about half unmasked; the upper-right corner is empty, lower-left full.
    const r = (x: number, y: number) => pic.rgba[(y * 10 + x) * 4] as number;
    expect(r(9, 0)).toBe(255);
    expect(r(0, 9)).toBe(28);
    expect(r(5, 5)).toBeGreaterThan(100);
    expect(r(5, 5)).toBeLessThan(200);
  });

  it('also writes SVG', () => {
    const svg = renderSvg(causal(), 8, 8, { size: 8 });
    expect(svg.startsWith('<svg')).toBe(true);
    // One ink run per row of a causal mask.
    expect(svg.match(/fill="#1c3879"/g)?.length).toBe(8);
  });
});
