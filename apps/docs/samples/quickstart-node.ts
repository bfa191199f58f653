// Getting started, in Node: the CPU reference backend (see site/guide/getting-started.md).
// #region sample
import { defineAttention } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { slidingWindow } from '@tessera/patterns';

// One attention computation, described as data: 8 query heads sharing 2 key/value heads (GQA),
// 1024 tokens, each query attending to itself and the 127 keys before it.
const spec = defineAttention({
  batch: 1,
  headsQ: 8,
  headsKV: 2,
  seqQ: 1024,
  seqKV: 1024,
  headDim: 64,
  dtype: 'f32',
  mask: slidingWindow(128),
});

// q, k and v are Float32Arrays in BHSD order: [batch][head][position][dim].
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const q = random(1 * 8 * 1024 * 64);
const k = random(1 * 2 * 1024 * 64);
const v = random(1 * 2 * 1024 * 64);

const backend = await createCpuBackend();
const { out, lse } = await backend.run(spec, { q, k, v });
// out is [1][8][1024][64] like q; lse holds one log-sum-exp per query row.
console.log(out.length, lse.length); // prints: 524288 8192
await backend.dispose();

// #endregion sample

export { k, lse, out, q, spec, v };
