// Getting started, in the browser: WebGPU where there is one, else the CPU backend.
// The samples test runs this in Node (no navigator.gpu: the CPU path); the browser test runs it
// in Chromium, where it takes the WebGPU path.
// #region sample
import { defineAttention } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { causal } from '@tessera/patterns';
import { createWebGpuBackend } from '@tessera/webgpu';

const spec = defineAttention({
  batch: 1,
  headsQ: 4,
  headsKV: 4,
  seqQ: 256,
  seqKV: 256,
  headDim: 32,
  dtype: 'f32',
  mask: causal(),
});

const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const [q, k, v] = [random(4 * 256 * 32), random(4 * 256 * 32), random(4 * 256 * 32)];

// Both backends take the same spec and the same Float32Arrays.
const backend = globalThis.navigator?.gpu ? await createWebGpuBackend() : await createCpuBackend();
const started = performance.now();
const { out, lse } = await backend.run(spec, { q, k, v });
console.log(
  `${backend.name} on ${backend.device ?? 'this machine'}: ${(performance.now() - started).toFixed(1)} ms`,
);

// #endregion sample

export { backend, k, lse, out, q, spec, v };
