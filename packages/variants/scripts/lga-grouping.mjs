#!/usr/bin/env node
// How Linearized Grouped Attention's error on real attention depends on how tokens are grouped:
// learned (tokens routed by key to centroids, random or fitted by k-means) vs consecutive, at
// group sizes 16 and 64, on the fixture's layer 3, on the CPU backend (f64 sums), against exact
// attention. Run after `npm run build`:  node packages/variants/scripts/lga-grouping.mjs [layer]
import { createCpuBackend } from '@tessera/cpu';
import { errorStats, exact, linearizedGrouped, runSystem } from '@tessera/variants';
import { loadFixture } from '@tessera/variants/fixtures';

const layer = Number(process.argv[2] ?? 3);
const fx = await loadFixture(new URL('../fixtures/data', import.meta.url).pathname, layer);
const shape = { headsQ: fx.heads, seq: fx.seq, headDim: fx.headDim };
const cpu = await createCpuBackend();
const qkv = { q: fx.q, k: fx.k, v: fx.v };
const ref = (await runSystem(cpu, exact(shape), qkv)).out;
const pct = (x, d) => `${(100 * x).toFixed(d)}%`;

console.log(`| grouping | group | centroids | rel. error | 1 − cos |`);
console.log(`|---|---|---|---|---|`);
for (const group of [16, 64]) {
  const rows = [];
  const learned = linearizedGrouped(shape, { group, clusters: 8, seed: 9 });
  rows.push(['learned (by key)', 'random', learned, learned.weights]);
  rows.push(['learned (by key)', 'k-means on the keys', learned, learned.calibrate(qkv)]);
  const consecutive = linearizedGrouped(shape, { group, grouping: 'consecutive', seed: 9 });
  rows.push(['consecutive, FAVOR+ across', '—', consecutive, consecutive.weights]);
  const soft = linearizedGrouped(shape, {
    group,
    grouping: 'consecutive',
    across: 'softmax',
    seed: 9,
  });
  rows.push(['consecutive, softmax across', '—', soft, soft.weights]);
  for (const [grouping, centroids, sys, weights] of rows) {
    const { out } = await runSystem(cpu, sys, qkv, undefined, weights);
    const e = errorStats(out, ref, fx.headDim);
    console.log(
      `| ${grouping} | ${group} | ${centroids} | ${pct(e.relative, 1)} | ${pct(e.cosine, 2)} |`,
    );
  }
}
console.log(
  `\nfixture layer ${layer}: ${fx.heads} heads × ${fx.seq} tokens × ${fx.headDim}, causal, FAVOR+ 256 features, 8 clusters`,
);
