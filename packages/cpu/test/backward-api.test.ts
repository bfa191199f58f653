import {
  defineAttention,
  InputError,
  maskMod,
  ResourceLimitError,
  SpecError,
  scoreMod,
  tensor,
  tensorSizes,
  UnsupportedError,
  where,
} from '@tessera/core';
import { causal } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import {
  dOutFor,
  exactBackward,
  expectGrad,
  expectGradients,
  FD_STEP,
  FD_TOL,
  fdGradients,
  pointOf,
} from './gradcheck.js';
import { inputsFor } from './util.js';

const backend = await createCpuBackend();

describe('backward() on the cpu backend', () => {
  it('returns f32 gradients of the right shapes that match the f64 reference fed exact outputs', async () => {
    const slopes = tensor(Float32Array.from([0.3, 0.1]));
    const unused = tensor(Float32Array.from([1, 2, 3]));
    const spec = defineAttention({
      batch: 2,
      headsQ: 2,
      headsKV: 1,
      seqQ: 7,
      seqKV: 9,
      headDim: 4,
      headDimV: 3,
      mask: maskMod(({ q, kv }) => kv.le(q.add(2)).and(unused.at(0).gt(0))),
      scoreMod: scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat()))),
    });
    const inputs = inputsFor(spec, 5);
    const { out, lse } = await backend.run(spec, inputs);
    const dOut64 = dOutFor(spec, 6);
    const dOut = Float32Array.from(dOut64);
    const got = await backend.backward?.(spec, { ...inputs, out, lse, dOut });
    if (!got) throw new Error('no backward');
    const sizes = tensorSizes(spec);
    expect(got.dq).toBeInstanceOf(Float32Array);
    expect([got.dq.length, got.dk.length, got.dv.length]).toEqual([sizes.q, sizes.k, sizes.v]);
    expect(got.grads).toHaveLength(2);
    const slot = spec.tensors.findIndex((t) => t.data === slopes.data);
    expect(got.grads[slot]).toBeInstanceOf(Float32Array);
    expect(got.grads[slot]).toHaveLength(2);
    expect(got.grads[1 - slot]).toBeNull(); // read by the mask only
    // The façade's out / lse are f32, so P carries f32 rounding (~1e-7 relative to lse).
    const want = exactBackward(spec, inputs, dOut64);
    expectGrad('dq', got.dq, want.dq, 1e-5);
    expectGrad('dk', got.dk, want.dk, 1e-5);
    expectGrad('dv', got.dv, want.dv, 1e-5);
    expectGrad('slopes', got.grads[slot] as Float32Array, want.grads[slot] as Float64Array, 1e-5);
  });

  it('a fully masked row gets zero gradients and nothing is NaN', async () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 6,
      headDim: 3,
      mask: maskMod(({ q, kv }) => q.ne(2).and(q.ge(kv))),
      tiling: { blockQ: 2, blockKV: 2 },
    });
    const inputs = inputsFor(spec, 7);
    const { out, lse } = await backend.run(spec, inputs);
    expect(lse[2]).toBe(Number.NEGATIVE_INFINITY);
    const dOut = Float32Array.from(dOutFor(spec, 1));
    for (const strategy of ['tiled', 'naive'] as const) {
      const g = await backend.backward?.(spec, { ...inputs, out, lse, dOut }, { strategy });
      if (!g) throw new Error('no backward');
      for (const t of [g.dq, g.dk, g.dv]) expect(t.some(Number.isNaN)).toBe(false);
      for (const h of [0, 1]) {
        const row = g.dq.subarray((h * 6 + 2) * 3, (h * 6 + 3) * 3);
        expect(Array.from(row)).toEqual([0, 0, 0]);
      }
    }
    // And the rest is right: finite differences of the exact forward.
    const dOut64 = Float64Array.from(dOut);
    const fd = fdGradients(spec, pointOf(spec, inputs), dOut64, FD_STEP);
    expectGradients(exactBackward(spec, inputs, dOut64), fd, FD_TOL, []);
  });

  it('a score mod giving -Infinity masks the element (no gradient through it, no NaN)', () => {
    const spec = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 5,
      headDim: 3,
      scoreMod: scoreMod(({ score, q, kv }) =>
        where(q.add(kv).mod(3).eq(0), Number.NEGATIVE_INFINITY, score),
      ),
    });
    const inputs = inputsFor(spec, 9);
    const dOut = dOutFor(spec, 2);
    const fd = fdGradients(spec, pointOf(spec, inputs), dOut, FD_STEP);
    expectGradients(exactBackward(spec, inputs, dOut), fd, FD_TOL, []);
  });
});

describe('backward() errors, thrown before any work', () => {
  const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 4, headDim: 3, mask: causal() });
  const inputs = inputsFor(spec, 3);
  const ok = async () => {
    const { out, lse } = await backend.run(spec, inputs);
    return { ...inputs, out, lse, dOut: Float32Array.from(dOutFor(spec, 4)) };
  };
  const backward = backend.backward?.bind(backend);
  if (!backward) throw new Error('no backward');

  it('wrong dOut length names dOut and its shape', async () => {
    const good = await ok();
    await expect(backward(spec, { ...good, dOut: new Float32Array(5) })).rejects.toThrow(
      /dOut has 5 elements, expected 24 \(batch 1 × headsQ 2 × seqQ 4 × headDimV 3\)/,
    );
  });

  it('NaN in dOut', async () => {
    const good = await ok();
    const dOut = good.dOut.slice();
    dOut[7] = Number.NaN;
    const call = backward(spec, { ...good, dOut });
    await expect(call).rejects.toThrow(InputError);
    await expect(backward(spec, { ...good, dOut })).rejects.toThrow(/dOut\[7\] is NaN/);
  });

  it('lse +Infinity', async () => {
    const good = await ok();
    const lse = good.lse.slice();
    lse[1] = Number.POSITIVE_INFINITY;
    await expect(backward(spec, { ...good, lse })).rejects.toThrow(InputError);
    await expect(backward(spec, { ...good, lse })).rejects.toThrow(/lse\[1\] is Infinity/);
  });

  it('a tampered spec is refused before the inputs are read', async () => {
    const bad = { ...spec, seqQ: 5 };
    await expect(backward(bad, await ok())).rejects.toThrow(SpecError);
  });

  it('bad options name backward()', async () => {
    const good = await ok();
    await expect(backward(spec, good, { strategy: 'fast' as unknown as 'naive' })).rejects.toThrow(
      /options.strategy must be 'tiled' or 'naive'/,
    );
    await expect(backward(spec, good, null as unknown as object)).rejects.toThrow(
      /backward\(\) options must be an object/,
    );
  });

  it("strategy 'naive' respects maxNaiveBytes; 'tiled' still runs", async () => {
    const small = await createCpuBackend({ maxNaiveBytes: 100 });
    const good = await ok();
    await expect(small.backward?.(spec, good, { strategy: 'naive' })).rejects.toThrow(
      ResourceLimitError,
    );
    await expect(small.backward?.(spec, good, { strategy: 'naive' })).rejects.toThrow(
      /backward with strategy 'naive' would allocate .* GB \(two 4 × 4 f64 matrices per \(batch, head\)/,
    );
    await expect(small.backward?.(spec, good)).resolves.toBeDefined();
  });

  it('a disposed backend refuses', async () => {
    const b = await createCpuBackend();
    await b.dispose();
    await expect(b.backward?.(spec, await ok())).rejects.toThrow(UnsupportedError);
  });
});
