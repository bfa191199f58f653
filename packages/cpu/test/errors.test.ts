import {
  type AttentionSpec,
  defineAttention,
  InputError,
  maskMod,
  ResourceLimitError,
  SpecError,
  scoreMod,
  UnsupportedError,
} from '@tessera/core';
import { hashSpec } from '@tessera/core/backend';
import { describe, expect, it } from 'vitest';
import { createCpuBackend, naiveBytes } from '../src/index.js';
import { inputsFor } from './util.js';

const backend = await createCpuBackend();
const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 4, headDim: 2 });
const good = inputsFor(spec, 1);

describe('bad inputs are rejected with InputError, before any output', () => {
  it('names the tensor and both lengths', async () => {
    await expect(backend.run(spec, { ...good, q: new Float32Array(5) })).rejects.toThrow(
      /q has 5 elements, expected 16/,
    );
    await expect(backend.run(spec, { ...good, k: new Float32Array(17) })).rejects.toThrow(
      /k has 17 elements, expected 16/,
    );
    await expect(backend.run(spec, { ...good, v: new Float32Array(0) })).rejects.toThrow(
      InputError,
    );
  });

  it('rejects non-finite values, naming the element', async () => {
    const q = good.q.slice();
    q[3] = Number.NaN;
    await expect(backend.run(spec, { ...good, q })).rejects.toThrow(/q\[3\] is NaN/);
    const v = good.v.slice();
    v[7] = Number.NEGATIVE_INFINITY;
    await expect(backend.run(spec, { ...good, v }, { strategy: 'naive' })).rejects.toThrow(
      /v\[7\] is -Infinity: inputs must be finite/,
    );
  });

  it('rejects arrays of the wrong type', async () => {
    const k = Float64Array.from(good.k) as unknown as Float32Array;
    await expect(backend.run(spec, { ...good, k })).rejects.toThrow(
      /k must be a Float32Array \(got Float64Array\)/,
    );
  });

  it('rejects bad run options', async () => {
    const bad = [{ strategy: 'flash' }, { blockQ: 0 }, { blockKV: 2.5 }, null];
    for (const options of bad) {
      // biome-ignore lint/suspicious/noExplicitAny: deliberately malformed options
      await expect(backend.run(spec, good, options as any)).rejects.toThrow(InputError);
    }
  });
});

describe('specs the backend cannot run', () => {
  it('rejects objects that are not specs from defineAttention', async () => {
    await expect(backend.run({} as AttentionSpec, good)).rejects.toThrow(SpecError);
    await expect(backend.run(null as unknown as AttentionSpec, good)).rejects.toThrow(
      /needs a spec from defineAttention/,
    );
    const edited = { ...spec, seqQ: 3 };
    await expect(backend.run(edited, good)).rejects.toThrow(/does not match its contents/);
  });

  it('rejects a kernel it does not know with UnsupportedError', async () => {
    const { hash: _, ...body } = spec;
    const forged = { ...body, kernel: { type: 'sparse-topk' } } as unknown as AttentionSpec;
    const withHash = { ...forged, hash: hashSpec(forged) } as AttentionSpec;
    await expect(backend.run(withHash, good)).rejects.toThrow(UnsupportedError);
  });

  it('linear kernels accept no mask or a causal mask only (core validation)', () => {
    const window = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(4)), { name: 'window' });
    expect(() =>
      defineAttention({ ...base(), kernel: { type: 'linear', featureMap: 'relu' }, mask: window }),
    ).toThrow(/kernel 'linear' supports no mask or a causal mask only \(got mask 'window'\)/);
    const mod = scoreMod(({ score }) => score.mul(2), { name: 'double' });
    expect(() =>
      defineAttention({ ...base(), kernel: { type: 'linear', featureMap: 'relu' }, scoreMod: mod }),
    ).toThrow(SpecError);
  });

  it('a disposed backend refuses to run', async () => {
    const b = await createCpuBackend();
    await b.dispose();
    await expect(b.run(spec, good)).rejects.toThrow(UnsupportedError);
  });
});

function base() {
  return { batch: 1, headsQ: 1, seqQ: 8, headDim: 4 };
}

describe('the naive strategy refuses to allocate beyond maxNaiveBytes', () => {
  it('throws ResourceLimitError with the estimate, and tiled still runs', async () => {
    const small = await createCpuBackend({ maxNaiveBytes: 10_000 });
    const s = defineAttention({ batch: 1, headsQ: 2, seqQ: 64, headDim: 4 });
    const inputs = inputsFor(s, 2);
    expect(naiveBytes(s)).toBeGreaterThan(64 * 64 * 4);
    await expect(small.run(s, inputs, { strategy: 'naive' })).rejects.toThrow(ResourceLimitError);
    await expect(small.run(s, inputs, { strategy: 'naive' })).rejects.toThrow(
      /strategy 'naive' would allocate 0\.0\d+ GB \(a 64 × 64 f32 probability matrix per \(batch, head\), estimateCost\) but the cpu backend's maxNaiveBytes is 0\.0000100 GB/,
    );
    const { out } = await small.run(s, inputs);
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it('estimates about 17 GB for N = 65,536 and fails before allocating it', async () => {
    const big = defineAttention({ batch: 1, headsQ: 4, seqQ: 65536, headDim: 64 });
    expect(naiveBytes(big) / 1e9).toBeCloseTo(17.18, 2);
    const n = 4 * 65536 * 64;
    const inputs = { q: new Float32Array(n), k: new Float32Array(n), v: new Float32Array(n) };
    await expect(backend.run(big, inputs, { strategy: 'naive' })).rejects.toThrow(
      /would allocate 17\.2 GB \(a 65536 × 65536 f32 probability matrix per \(batch, head\)/,
    );
  });

  it('validates its options', async () => {
    await expect(createCpuBackend({ maxNaiveBytes: -1 })).rejects.toThrow(InputError);
    await expect(createCpuBackend({ maxNaiveBytes: Number.NaN })).rejects.toThrow(/maxNaiveBytes/);
  });
});
