// Runs one attention spec with the WebGPU backend in the page and publishes the result on
// `window.tessera` (the browser test compares it with the CPU reference).
import { defineAttention, maskMod } from '@tessera/core';
import { createWebGpuBackend } from '@tessera/webgpu';

/** The example's spec and inputs: small, deterministic, the same on both sides of the test. */
export function exampleSpec() {
  return defineAttention({
    batch: 1,
    headsQ: 4,
    headsKV: 2,
    seqQ: 96,
    headDim: 32,
    mask: maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(40)), { name: 'sliding-window(40)' }),
  });
}

export function exampleInputs(spec: ReturnType<typeof exampleSpec>) {
  const fill = (n: number, seed: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.731 + seed) * 0.9);
  const { batch: B, headsQ: H, headsKV: HK, seqQ: S, seqKV: SK, headDim: D, headDimV: DV } = spec;
  return { q: fill(B * H * S * D, 1), k: fill(B * HK * SK * D, 2), v: fill(B * HK * SK * DV, 3) };
}

async function main(): Promise<void> {
  const status = document.getElementById('status') as HTMLElement;
  const result = document.getElementById('result') as HTMLElement;
  const w = window as unknown as { tessera?: unknown };
  try {
    const backend = await createWebGpuBackend();
    const spec = exampleSpec();
    const t0 = performance.now();
    const { out, lse } = await backend.run(spec, exampleInputs(spec));
    const ms = performance.now() - t0;
    w.tessera = {
      ok: true,
      adapter: backend.device,
      ms,
      out: Array.from(out),
      lse: Array.from(lse),
    };
    status.textContent = `done on ${backend.device} in ${ms.toFixed(1)} ms`;
    result.textContent = `out[0..8] = ${Array.from(out.slice(0, 8), (x) => x.toFixed(4)).join(', ')}`;
    await backend.dispose();
  } catch (e) {
    w.tessera = { ok: false, error: String((e as Error).stack ?? e) };
    status.textContent = `failed: ${(e as Error).message}`;
  }
}

if (typeof document !== 'undefined') void main();
