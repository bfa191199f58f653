// Concepts: backends (site/concepts/backends.md).
// #region contract
import { type AttentionBackend, defineAttention, UnsupportedError } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { slidingWindow } from '@tessera/patterns';
import { createWebGpuBackend } from '@tessera/webgpu';

const spec = defineAttention({
  batch: 1,
  headsQ: 2,
  seqQ: 300, // not a multiple of any block size: backends handle ragged edges
  headDim: 32,
  dtype: 'f32',
  mask: slidingWindow(48),
});
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const inputs = { q: random(2 * 300 * 32), k: random(2 * 300 * 32), v: random(2 * 300 * 32) };

// The reference: f64 accumulation, and a 'naive' strategy that materialises every score.
const cpu = await createCpuBackend();
const reference = await cpu.run(spec, inputs, { strategy: 'naive' });

const maxDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

const results: Record<string, number> = {};
const backends: [string, () => Promise<AttentionBackend>][] = [
  ['cpu', createCpuBackend],
  ['webgpu', createWebGpuBackend], // navigator.gpu in browsers, the `webgpu` package in Node
];
for (const [name, create] of backends) {
  let backend: AttentionBackend;
  try {
    backend = await create();
  } catch (e) {
    if (!(e instanceof UnsupportedError)) throw e;
    console.log(`${name}: not available here (${e.message})`);
    continue;
  }
  const { out } = await backend.run(spec, inputs); // 'tiled': only the blocks the layout lists
  results[name] = maxDiff(out, reference.out);
  console.log(`${name} (${backend.device ?? 'host'}): max |out − reference| = ${results[name]}`);
  await backend.dispose();
}
// #endregion contract

// #region errors
// Bad input is a typed error that names what is wrong; nothing is clamped or half-written.
let inputMessage = '';
try {
  await cpu.run(spec, { ...inputs, k: inputs.k.subarray(1) });
} catch (e) {
  inputMessage = (e as Error).message;
  console.log((e as Error).name); // prints: InputError
}
// #endregion errors

await cpu.dispose();

export { inputMessage, inputs, reference, results, spec };
