// Draws every pattern into packages/patterns/gallery/*.png and rewrites the gallery table in
// packages/patterns/README.md (between the gallery markers).
//
//   node tooling/scripts/run.mjs turbo run build --filter @tessera/patterns
//   node packages/patterns/scripts/gallery.mjs
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
  render,
  slidingWindow,
  stats,
  strided,
  union,
} from '@tessera/patterns';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const out = join(root, 'gallery');
const N = 64;
const BLOCK = 8;
const SIZE = 256;

const docs = Int32Array.from({ length: N }, (_, t) => (t < 12 ? 0 : t < 34 ? 1 : t < 41 ? 2 : 3));

/** [file, code shown in the README, mask, extra render options] */
const gallery = [
  ['full', 'full()', full()],
  ['causal', 'causal()', causal()],
  ['sliding-window-causal', 'slidingWindow(8)', slidingWindow(8)],
  [
    'sliding-window-symmetric',
    'slidingWindow(8, { causal: false })',
    slidingWindow(8, { causal: false }),
  ],
  ['dilated-causal', 'dilated(6, 3)', dilated(6, 3)],
  ['dilated-symmetric', 'dilated(4, 3, { causal: false })', dilated(4, 3, { causal: false })],
  ['strided', 'strided(8)', strided(8)],
  ['exponential-stride', 'exponentialStride()', exponentialStride()],
  ['prime-stride', 'primeStride([5, 7])', primeStride([5, 7])],
  ['global-tokens', 'globalTokens([0, 1, 30])', globalTokens([0, 1, 30])],
  ['random-density', 'random({ density: 0.15, seed: 1 })', random({ density: 0.15, seed: 1 })],
  [
    'random-per-row',
    'random({ perRow: 3, seed: 1, causal: true })',
    random({ perRow: 3, seed: 1, causal: true }),
  ],
  [
    'random-blocks',
    'random({ perRow: 2, block: 8, seed: 1, seqKV: 64 })',
    random({ perRow: 2, block: 8, seed: 1, seqKV: N }),
  ],
  [
    'bigbird',
    'bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block: 8, seed: 1, seqKV: 64 })',
    bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block: 8, seed: 1, seqKV: N }),
  ],
  [
    'longformer',
    'longformer({ window: 12, dilation: 2, global: [0, 40] })',
    longformer({ window: 12, dilation: 2, global: [0, 40] }),
  ],
  [
    'longformer-head-3',
    'longformer({ window: 12, dilation: [1, 1, 2, 3], global: [0] }), head 3 of 4',
    longformer({ window: 12, dilation: [1, 1, 2, 3], global: [0] }),
    { head: 3, headsQ: 4 },
  ],
  ['prefix-lm', 'prefixLM(20)', prefixLM(20)],
  ['document', 'document(ids) // 4 documents', document(docs)],
  ['document-causal', 'document(ids, { causal: true })', document(docs, { causal: true })],
  ['block-diagonal', 'blockDiagonal(16)', blockDiagonal(16)],
  ['chunked-causal', 'chunkedCausal(16)', chunkedCausal(16)],
  [
    'union',
    'union(slidingWindow(6), strided(16), globalTokens(2))',
    union(slidingWindow(6), strided(16), globalTokens(2)),
  ],
  [
    'intersect',
    'intersect(document(ids), slidingWindow(10))',
    intersect(document(docs), slidingWindow(10)),
  ],
  [
    'difference',
    'difference(causal(), slidingWindow(12))',
    difference(causal(), slidingWindow(12)),
  ],
  ['not', 'not(blockDiagonal(16))', not(blockDiagonal(16))],
];

mkdirSync(out, { recursive: true });
const cells = [];
for (const [file, code, mask, extra = {}] of gallery) {
  const pic = render(mask, N, N, { size: SIZE, blockQ: BLOCK, blockKV: BLOCK, ...extra });
  writeFileSync(join(out, `${file}.png`), pic.png);
  const s = stats(mask, N, N, { blockQ: BLOCK, blockKV: BLOCK, headsQ: extra.headsQ ?? 1 });
  const pct = (x) => `${(100 * x).toFixed(0)}%`;
  cells.push(
    `<td align="center"><img src="gallery/${file}.png" width="160" alt="${file}"><br><code>${code}</code><br>${pct(
      s.density,
    )} of pairs, ${pct(s.blockDensity)} of blocks</td>`,
  );
}

const PER_ROW = 3;
const rows = [];
for (let i = 0; i < cells.length; i += PER_ROW) {
  rows.push(`<tr>\n${cells.slice(i, i + PER_ROW).join('\n')}\n</tr>`);
}
const table = `<table>\n${rows.join('\n')}\n</table>`;
const readmePath = join(root, 'README.md');
const readme = readFileSync(readmePath, 'utf8');
const start = '<!-- gallery:start -->';
const end = '<!-- gallery:end -->';
const a = readme.indexOf(start);
const b = readme.indexOf(end);
if (a < 0 || b < a) throw new Error('README.md has no gallery markers');
writeFileSync(readmePath, `${readme.slice(0, a + start.length)}\n${table}\n${readme.slice(b)}`);
console.log(`wrote ${gallery.length} pictures to ${out} and the README table`);
