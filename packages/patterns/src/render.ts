import { compileMask, layoutSlice, type Mask, SpecError } from '@tessera/core';
import { encode } from 'fast-png';
import { maskLayout } from './layout-helpers.js';
import { statsContext } from './stats.js';
import { nonNegativeInt, options, positiveInt } from './validate.js';

export interface RenderOptions {
  /** Pixels along the longer side (default 256); the other side keeps the aspect ratio. */
  readonly size?: number;
  /** Shade the visited blocks of the layout at these block sizes (both or neither). */
  readonly blockQ?: number;
  readonly blockKV?: number;
  /** Which batch index and query head to draw (default 0), out of `headsQ` heads (default 1). */
  readonly batch?: number;
  readonly head?: number;
  readonly headsQ?: number;
}

/** A picture of a mask: query rows top to bottom, keys left to right. */
export interface MaskPicture {
  readonly width: number;
  readonly height: number;
  /** Row-major RGBA, 8 bits per channel. */
  readonly rgba: Uint8Array;
  /** The same picture as a PNG file. */
  readonly png: Uint8Array;
}

const BACKGROUND = [255, 255, 255] as const;
const PARTIAL_BLOCK = [253, 236, 200] as const;
const FULL_BLOCK = [214, 236, 214] as const;
const INK = [28, 56, 121] as const;
/** Elements read per pixel at most; larger cells are sampled on an even grid. */
const SAMPLES = 16;

function raster(
  where: string,
  mask: Mask,
  seqQ: number,
  seqKV: number,
  opts: RenderOptions | undefined,
): { width: number; height: number; rgba: Uint8Array } {
  if (mask?.kind !== 'mask') throw new SpecError(`${where}: first argument must be a Mask`);
  const o = options<RenderOptions>(where, opts, [
    'size',
    'blockQ',
    'blockKV',
    'batch',
    'head',
    'headsQ',
  ]);
  const size = positiveInt(where, 'size', o.size ?? 256);
  const b = nonNegativeInt(where, 'batch', o.batch ?? 0);
  const h = nonNegativeInt(where, 'head', o.head ?? 0);
  const headsQ = positiveInt(where, 'headsQ', o.headsQ ?? 1);
  if (h >= headsQ) throw new SpecError(`${where}: head (${h}) must be below headsQ (${headsQ})`);
  if ((o.blockQ === undefined) !== (o.blockKV === undefined)) {
    throw new SpecError(`${where}: give both blockQ and blockKV, or neither`);
  }
  const ctx = statsContext(where, seqQ, seqKV, { ...o, batch: b + 1, headsQ });
  const longer = Math.max(ctx.seqQ, ctx.seqKV);
  const width = Math.max(1, Math.round((ctx.seqKV * size) / longer));
  const height = Math.max(1, Math.round((ctx.seqQ * size) / longer));

  // Background: the block shading, when asked for.
  const shade = new Uint8Array(width * height);
  if (o.blockQ !== undefined) {
    const layout = maskLayout(mask, ctx);
    const slice = layoutSlice(layout, b, h);
    for (let i = 0; i < layout.numQBlocks; i++) {
      const r = slice * layout.numQBlocks + i;
      const y0 = Math.floor((i * ctx.blockQ * height) / ctx.seqQ);
      const y1 = Math.ceil((Math.min(ctx.seqQ, (i + 1) * ctx.blockQ) * height) / ctx.seqQ);
      for (let e = layout.rowStart[r] as number; e < (layout.rowStart[r + 1] as number); e++) {
        const j = layout.kvBlocks[e] as number;
        const x0 = Math.floor((j * ctx.blockKV * width) / ctx.seqKV);
        const x1 = Math.ceil((Math.min(ctx.seqKV, (j + 1) * ctx.blockKV) * width) / ctx.seqKV);
        for (let y = y0; y < y1; y++)
          shade.fill(layout.full[e] ? 2 : 1, y * width + x0, y * width + x1);
      }
    }
  }

  const f = compileMask(mask);
  const span = (p: number, pixels: number, n: number): [number, number] => {
    const lo = Math.floor((p * n) / pixels);
    return [lo, Math.max(lo + 1, Math.floor(((p + 1) * n) / pixels))];
  };
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    const [qa, qb] = span(y, height, ctx.seqQ);
    const qs = Math.min(SAMPLES, qb - qa);
    for (let x = 0; x < width; x++) {
      const [ka, kb] = span(x, width, ctx.seqKV);
      const ks = Math.min(SAMPLES, kb - ka);
      let on = 0;
      for (let sy = 0; sy < qs; sy++) {
        const q = qa + Math.floor(((sy + 0.5) * (qb - qa)) / qs);
        for (let sx = 0; sx < ks; sx++) {
          if (f(b, h, q, ka + Math.floor(((sx + 0.5) * (kb - ka)) / ks))) on++;
        }
      }
      const t = on / (qs * ks);
      const s = shade[y * width + x];
      const bg = s === 2 ? FULL_BLOCK : s === 1 ? PARTIAL_BLOCK : BACKGROUND;
      const p = (y * width + x) * 4;
      for (let c = 0; c < 3; c++) {
        rgba[p + c] = Math.round((bg[c] as number) * (1 - t) + (INK[c] as number) * t);
      }
      rgba[p + 3] = 255;
    }
  }
  return { width, height, rgba };
}

/**
 * Draws a mask: unmasked pairs dark, masked ones light; with `blockQ`/`blockKV`, visited blocks of
 * the layout are shaded (green when full, amber when partial). A pixel covering several elements
 * shows the unmasked fraction of up to 16 × 16 of them, evenly spaced. Runs in browsers and Node.
 */
export function render(mask: Mask, seqQ: number, seqKV: number, opts?: RenderOptions): MaskPicture {
  const { width, height, rgba } = raster('render', mask, seqQ, seqKV, opts);
  return { width, height, rgba, png: encode({ width, height, data: rgba, channels: 4, depth: 8 }) };
}

const hex = (rgba: Uint8Array, p: number): string =>
  `#${[0, 1, 2].map((c) => (rgba[p + c] as number).toString(16).padStart(2, '0')).join('')}`;

/** The same picture as `render`, as an SVG string (one rectangle per run of equal pixels in a row). */
export function renderSvg(mask: Mask, seqQ: number, seqKV: number, opts?: RenderOptions): string {
  const { width, height, rgba } = raster('renderSvg', mask, seqQ, seqKV, opts);
  const rects: string[] = [];
  for (let y = 0; y < height; y++) {
    let x = 0;
    while (x < width) {
      const color = hex(rgba, (y * width + x) * 4);
      let end = x + 1;
      while (end < width && hex(rgba, (y * width + end) * 4) === color) end++;
      if (color !== '#ffffff') {
        rects.push(`<rect x="${x}" y="${y}" width="${end - x}" height="1" fill="${color}"/>`);
      }
      x = end;
    }
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" shape-rendering="crispEdges">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...rects,
    '</svg>',
  ].join('\n');
}
