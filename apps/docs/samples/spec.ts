// Concepts: the attention spec (site/concepts/spec.md).
// #region define
import { defineAttention, SpecError, specFromJSON, specToJSON } from '@tessera/core';
import { causal } from '@tessera/patterns';

const spec = defineAttention({
  batch: 2,
  headsQ: 32, // query heads
  headsKV: 8, // key/value heads: 4 query heads share each one (GQA); 1 would be MQA
  seqQ: 4096,
  seqKV: 4096,
  headDim: 128,
  dtype: 'bf16', // storage type; accumulation is always f32 or better
  layout: 'bshd', // tensors as [batch][position][head][dim] (default 'bhsd')
  mask: causal(),
  // scale: left out, so 1/√headDim
  tiling: { blockQ: 128, blockKV: 64 }, // hints: a backend may choose other sizes
});

console.log(spec.scale); // prints: 0.08838834764831843
console.log(spec.hash); // a SHA-256 of the structure: the kernel cache key
// #endregion define

// #region json
// A spec is plain data: it survives JSON, captured tensors included, with the same hash.
const copy = specFromJSON(specToJSON(spec));
console.log(copy.hash === spec.hash); // prints: true
// #endregion json

// #region errors
let message = '';
try {
  defineAttention({ batch: 1, headsQ: 12, headsKV: 5, seqQ: 128, headDim: 64 });
} catch (e) {
  if (!(e instanceof SpecError)) throw e;
  message = e.message;
  console.log(message); // names the field and the rule that failed
}

// #endregion errors

export { copy, message, spec };
