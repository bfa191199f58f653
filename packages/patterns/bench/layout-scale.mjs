// How building a block layout scales with N: a causal sliding window at N = 64 Ki, 256 Ki and
// 1 Mi with 128 × 128 blocks, plus other patterns at 1 Mi. Not a test: it prints a table.
//
//   node tooling/scripts/run.mjs turbo run build --filter @tessera/patterns
//   node --expose-gc packages/patterns/bench/layout-scale.mjs
import {
  bigBird,
  dilated,
  document,
  exponentialStride,
  longformer,
  slidingWindow,
} from '@tessera/patterns';

const BLOCK = 128;
const WINDOW = 4096;
const RUNS = 9;

if (typeof globalThis.gc !== 'function') {
  console.error('run with node --expose-gc for memory figures');
  process.exit(1);
}

const mib = (bytes) => (bytes / 2 ** 20).toFixed(2);

function measure(mask, n) {
  const ctx = { seqQ: n, seqKV: n, blockQ: BLOCK, blockKV: BLOCK, batch: 1, headsQ: 1 };
  for (let w = 0; w < 2; w++) mask.layout(ctx); // warm-up (JIT)
  const times = [];
  let layout;
  let heapPeak = 0;
  let heapKept = 0;
  let rss = 0;
  for (let r = 0; r < RUNS; r++) {
    layout = undefined;
    globalThis.gc();
    const before = process.memoryUsage();
    const heap0 = before.heapUsed + before.arrayBuffers;
    const rss0 = before.rss;
    const t0 = performance.now();
    layout = mask.layout(ctx);
    times.push(performance.now() - t0);
    const after = process.memoryUsage();
    heapPeak = Math.max(heapPeak, after.heapUsed + after.arrayBuffers - heap0);
    rss = Math.max(rss, after.rss - rss0);
    globalThis.gc();
    const kept = process.memoryUsage();
    heapKept = Math.max(heapKept, kept.heapUsed + kept.arrayBuffers - heap0);
  }
  times.sort((a, b) => a - b);
  const bytes = layout.rowStart.byteLength + layout.kvBlocks.byteLength + layout.full.byteLength;
  const grid = layout.numQBlocks * layout.numKVBlocks;
  return {
    n,
    visited: layout.kvBlocks.length,
    grid,
    ms: times[Math.floor(RUNS / 2)],
    bytes,
    heapPeak,
    heapKept,
    rss,
  };
}

function row(label, m) {
  const nsPerBlock = ((m.ms * 1e6) / m.visited).toFixed(0);
  return `| ${label} | ${m.n.toLocaleString('en-US')} | ${m.visited.toLocaleString('en-US')} | ${(
    (100 * m.visited) / m.grid
  ).toFixed(
    3,
  )}% | ${m.ms.toFixed(1)} | ${nsPerBlock} | ${mib(m.bytes)} | ${mib(m.heapPeak)} | ${mib(
    m.heapKept,
  )} | ${mib(m.rss)} |`;
}

const header = [
  '| pattern | N | visited blocks | of the grid | median ms | ns / visited block | layout MiB | JS memory Δ before GC, MiB | JS memory Δ kept, MiB | RSS Δ MiB |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];

console.log(`node ${process.version}, ${BLOCK}×${BLOCK} blocks, median of ${RUNS} runs\n`);
console.log(`Causal sliding window (${WINDOW}):\n`);
console.log(header.join('\n'));
for (const n of [65536, 262144, 1048576]) {
  console.log(row(`slidingWindow(${WINDOW})`, measure(slidingWindow(WINDOW, { causal: true }), n)));
}

const N = 1048576;
const docs = new Int32Array(N);
for (let t = 0, d = 0; t < N; d++) {
  const len = 1000 + ((d * 7919) % 30000); // jagged documents of 1k to 31k tokens
  docs.fill(d, t, Math.min(N, t + len));
  t += len;
}
const others = [
  ['dilated(1024, 4)', dilated(1024, 4)],
  ['exponentialStride()', exponentialStride()],
  ['longformer(512, global 16)', longformer({ window: 512, global: 16 })],
  [
    'bigBird(3, 2, 3, block 128)',
    bigBird({ window: 3, globalBlocks: 2, randomBlocks: 3, block: 128, seed: 1, seqKV: N }),
  ],
  ['document(causal)', document(docs, { causal: true })],
];
console.log(`\nOther patterns at N = ${N.toLocaleString('en-US')}:\n`);
console.log(header.join('\n'));
for (const [label, mask] of others) console.log(row(label, measure(mask, N)));
