// Guide: write your own attention variant (site/guide/custom-variant.md). A StreamingLLM-style
// variant built from nothing but the IR: attention sinks plus a causal window, a per-head
// distance decay and softcapping, run on every backend this machine has.

// #region mask
import { maskMod } from '@tessera/core';

const SINKS = 4; // the first tokens stay visible to every later query ("attention sinks")
const WINDOW = 192; // plus the query itself and the 191 keys before it

const sinksAndWindow = maskMod(({ q, kv }) => kv.le(q).and(q.sub(kv).lt(WINDOW).or(kv.lt(SINKS))), {
  name: `sinks-${SINKS}-window-${WINDOW}`,
});

// #endregion mask

// #region score
import { scoreMod, tensor } from '@tessera/core';

const HEADS = 4;
// One decay rate per query head, captured as a tensor: every backend reads the same table.
const decay = tensor(Float32Array.from({ length: HEADS }, (_, h) => 0.01 * 2 ** h));
const CAP = 20;

const decayAndCap = scoreMod(
  ({ score, h, q, kv }) =>
    score
      .sub(decay.at(h).mul(q.sub(kv))) // penalise distance, more steeply in later heads
      .div(CAP)
      .tanh()
      .mul(CAP), // softcap: scores stay inside (−20, 20)
  { name: `decay-softcap-${CAP}` },
);

// #endregion score

// #region spec
import { blockLayout, defineAttention, estimateCost, layoutStats } from '@tessera/core';

const spec = defineAttention({
  batch: 1,
  headsQ: HEADS,
  headsKV: 2,
  seqQ: 640,
  seqKV: 640,
  headDim: 64,
  dtype: 'f32',
  mask: sinksAndWindow,
  scoreMod: decayAndCap,
});

// No pattern supplied a layout, so core derives one from the expression by interval reasoning.
const layout = blockLayout(spec, { blockQ: 64, blockKV: 64 });
const stats = layoutStats(layout, spec.batch, spec.headsQ);
// Over the 4 heads: 10 × 10 blocks each, of which a tiled kernel visits 40 (17 need no mask).
const blocks = HEADS * layout.numQBlocks * layout.numKVBlocks;
console.log(`${stats.visitedBlocks} of ${blocks} blocks visited, ${stats.fullBlocks} full`); // prints: 160 of 400 blocks visited, 68 full

const tiled = estimateCost(spec, { strategy: 'tiled', layout });
const naive = estimateCost(spec, { strategy: 'naive' });
console.log(`tiled: ${((100 * tiled.flops) / naive.flops).toFixed(0)}% of the naive FLOPs`); // prints: tiled: 40% of the naive FLOPs

// #endregion spec

// #region run
import { type AttentionBackend, UnsupportedError } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { CudaUnavailableError, createCudaBackend } from '@tessera/cuda';
import { createWebGpuBackend } from '@tessera/webgpu';

const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const inputs = {
  q: random(HEADS * 640 * 64),
  k: random(2 * 640 * 64),
  v: random(2 * 640 * 64),
};

// The reference every backend is checked against: the CPU backend, every score materialised.
const cpu = await createCpuBackend();
const reference = await cpu.run(spec, inputs, { strategy: 'naive' });

const candidates: Record<string, () => Promise<AttentionBackend>> = {
  cpu: createCpuBackend,
  webgpu: createWebGpuBackend,
  cuda: createCudaBackend,
};
const errors: Record<string, number> = {};
for (const [name, create] of Object.entries(candidates)) {
  let backend: AttentionBackend;
  try {
    backend = await create();
  } catch (e) {
    if (e instanceof UnsupportedError || e instanceof CudaUnavailableError) {
      console.log(`${name}: not available on this machine`);
      continue;
    }
    throw e;
  }
  const { out } = await backend.run(spec, inputs);
  errors[name] = out.reduce((m, x, i) => Math.max(m, Math.abs(x - reference.out[i])), 0);
  console.log(`${name}: max |out − reference| = ${errors[name].toExponential(1)}`);
  await backend.dispose();
}
await cpu.dispose();

// #endregion run

// #region emit
import { emitJs } from '@tessera/core';
import { emitCuda } from '@tessera/cuda';
import { emitWgsl } from '@tessera/webgpu';

// The same expressions, lowered by each backend's renderer (no device needed to see them).
const js = spec.mask ? emitJs(spec.mask.expr, 'sinksAndWindow') : '';
const wgsl = emitWgsl(spec);
const cuda = emitCuda(spec).source;
console.log(js);
console.log(
  wgsl
    .split('\n')
    .filter((line) => line.includes('tanh'))
    .join('\n'),
);
console.log(
  cuda
    .split('\n')
    .filter((line) => line.includes('tanh'))
    .join('\n'),
);

// #endregion emit

export {
  CAP,
  cuda,
  decay,
  errors,
  HEADS,
  inputs,
  js,
  layout,
  reference,
  SINKS,
  spec,
  WINDOW,
  wgsl,
};
