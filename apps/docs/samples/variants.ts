// Variants (site/variants.md): a named system from @tessera/variants, and a program written by
// hand from the same steps.

// #region system
import { createCpuBackend } from '@tessera/cpu';
import { errorStats, exact, runSystem, sparseProjected, structuredInputs } from '@tessera/variants';

const shape = { headsQ: 4, seq: 512, headDim: 32 }; // causal unless { causal: false }
// Sparse Projected Attention: block summaries pick the 17.5% most relevant key blocks per query
// block for exact attention; every other block counts through its mean-pooled summary.
const spa = sparseProjected(shape, { block: 32, fraction: 0.175 });

const { q, k, v } = structuredInputs(shape, 1); // seeded inputs with topical structure
const backend = await createCpuBackend();
const approx = await runSystem(backend, spa, { q, k, v });
const reference = await runSystem(backend, exact(shape), { q, k, v });
const err = errorStats(approx.out, reference.out, shape.headDim);
console.log(spa.name, err.relative < 0.2); // prints: sparse-projected true

// #endregion system

// #region program
import { defineAttention, defineProgram, runProgram } from '@tessera/core';
import { causal } from '@tessera/patterns';

// Exact attention to a query's own block of 32 keys, plus one summary per earlier block,
// merged exactly by log-sum-exp: every key counts once.
const spec = defineAttention({
  batch: 1,
  headsQ: 4,
  seqQ: 512,
  seqKV: 512,
  headDim: 32,
  mask: causal(),
});
const program = defineProgram({
  inputs: { q: [1, 4, 512, 32], k: [1, 4, 512, 32], v: [1, 4, 512, 32] },
  steps: [
    { op: 'pool', out: 'qp', x: 'q', block: 32 },
    { op: 'pool', out: 'kp', x: 'k', block: 32 },
    { op: 'pool', out: 'vp', x: 'v', block: 32 },
    // Keep the query's own block (local: 1) as the only selected one.
    {
      op: 'select',
      out: 'own',
      q: 'qp',
      k: 'kp',
      spec,
      blockQ: 32,
      blockKV: 32,
      topK: 1,
      local: 1,
    },
    { op: 'attend', out: 'near', lse: 'lseNear', spec, q: 'q', k: 'k', v: 'v', selection: 'own' },
    {
      op: 'compressed',
      out: 'far',
      lse: 'lseFar',
      q: 'q',
      k: 'kp',
      v: 'vp',
      block: 32,
      seqKV: 512,
      causal: true,
      scale: spec.scale,
    },
    {
      op: 'merge',
      out: 'out',
      branches: [
        { out: 'near', lse: 'lseNear' },
        { out: 'far', lse: 'lseFar' },
      ],
    },
  ],
  outputs: ['out'],
});
const { outputs, peakBytes } = await runProgram(backend, program, { q, k, v });
// Peak device memory of the program's values, against the 4 MiB of one 512×512 f32 score
// matrix per head that a materialising implementation would hold.
console.log(outputs.out?.length, peakBytes < 4 * 512 * 512 * 4); // prints: 65536 true
await backend.dispose();

// #endregion program

export { approx, err, k, outputs, q, v };
