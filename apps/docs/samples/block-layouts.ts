// Concepts: block layouts and the cost model (site/concepts/block-layouts.md).
// #region layout
import {
  blockLayout,
  defineAttention,
  estimateCost,
  exactBlockLayout,
  layoutContext,
  layoutStats,
  layoutsEqual,
  maskMod,
} from '@tessera/core';

// A mask written as an expression, with no layout of its own: core derives one.
const mask = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(256)).or(kv.lt(64)), {
  name: 'window-256-plus-64-sinks',
});
const spec = defineAttention({ batch: 1, headsQ: 8, seqQ: 4096, headDim: 64, dtype: 'f16', mask });

const layout = blockLayout(spec, { blockQ: 64, blockKV: 64 });
// Query block 10 (rows 640..703) visits these key blocks; `full` ones need no per-element mask.
const row = 10;
const visits = [];
for (let e = layout.rowStart[row]; e < layout.rowStart[row + 1]; e++) {
  visits.push(`${layout.kvBlocks[e]}${layout.full[e] ? ' (full)' : ''}`);
}
console.log(visits.join(', ')); // prints: 0 (full), 6, 7 (full), 8 (full), 9 (full), 10
// #endregion layout

// #region check
// The derivation is exact: it matches evaluating the mask on every (q, kv) pair (O(N²): a check only).
const exact = exactBlockLayout(
  spec.mask?.expr ?? null,
  [],
  layoutContext(spec, { blockQ: 64, blockKV: 64 }),
);
console.log(layoutsEqual(layout, exact)); // prints: true
const stats = layoutStats(layout, spec.batch, spec.headsQ);
console.log(stats.visitedBlocks, stats.fullBlocks, stats.density.toFixed(3));
// #endregion check

// #region cost
const tiled = estimateCost(spec, { strategy: 'tiled', layout });
const naive = estimateCost(spec, { strategy: 'naive' });
console.log(
  `FLOPs: ${(tiled.flops / 1e9).toFixed(2)} G tiled vs ${(naive.flops / 1e9).toFixed(2)} G naive`,
);
console.log(`extra memory: ${tiled.peakExtraBytes} B tiled vs ${naive.peakExtraBytes} B naive`);

// #endregion cost

export { layout, naive, spec, stats, tiled, visits };
