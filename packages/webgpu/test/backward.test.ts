// The WebGPU backward against the cpu backend's backward (f64 accumulation), on seeded random
// inputs. Tolerance: relative L2 error ‖got − want‖₂ / ‖want‖₂ ≤ 1e-4 on each of dq, dk, dv and
// every captured-tensor gradient (f32 accumulation on the GPU).
import {
  type AttentionGradients,
  type AttentionSpec,
  blockLayout,
  defineAttention,
  InputError,
  maskMod,
  ResourceLimitError,
  SpecError,
  scoreMod,
  tensor,
  UnsupportedError,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { bigBird, causal, intersect, slidingWindow } from '@tessera/patterns';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createWebGpuBackend,
  planBackward,
  type WebGpuBackend,
  type WebGpuBackwardOptions,
} from '../src/index.js';
import { randomArray, randomInputs } from './reference.js';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const TOL = 1e-4;

let gpu: WebGpuBackend;
let cpu: Awaited<ReturnType<typeof createCpuBackend>>;
beforeAll(async () => {
  gpu = await createWebGpuBackend();
  cpu = await createCpuBackend();
});
afterAll(async () => {
  await gpu?.dispose();
  await cpu?.dispose();
});

function relL2(got: Float32Array, want: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    const d = (got[i] as number) - (want[i] as number);
    num += d * d;
    den += (want[i] as number) ** 2;
  }
  if (got.length !== want.length || Number.isNaN(num)) return Number.POSITIVE_INFINITY;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Forward on the cpu, a random dOut; the backward's inputs. */
async function backwardInputs(spec: AttentionSpec, seed: number) {
  const x = randomInputs(spec, seed);
  const { out, lse } = await cpu.run(spec, x);
  return { ...x, out, lse, dOut: randomArray(out.length, seed + 7) };
}

function expectClose(got: AttentionGradients, want: AttentionGradients): void {
  for (const name of ['dq', 'dk', 'dv'] as const) {
    expect(relL2(got[name], want[name]), name).toBeLessThanOrEqual(TOL);
  }
  expect(got.grads.length).toBe(want.grads.length);
  want.grads.forEach((w, slot) => {
    const g = got.grads[slot];
    if (w === null) expect(g, `grads[${slot}]`).toBeNull();
    else expect(relL2(g as Float32Array, w), `grads[${slot}]`).toBeLessThanOrEqual(TOL);
  });
}

async function check(
  config: Parameters<typeof defineAttention>[0],
  options: WebGpuBackwardOptions = {},
  seed = 3,
) {
  const spec = defineAttention(config);
  const inputs = await backwardInputs(spec, seed);
  const want = await cpu.backward?.(spec, inputs);
  const got = await gpu.backward(spec, inputs, options);
  expectClose(got, want as AttentionGradients);
  return { spec, got, want: want as AttentionGradients };
}

const base = { batch: 1, headsQ: 2, seqQ: 37, headDim: 16 };
const slopes = tensor(new Float32Array([0.5, 0.25, 0.125, 0.0625]));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const REL = 37;
const table = tensor(randomArray(2 * REL - 1, 99));
const relBias = scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(REL - 1))), {
  name: 'relative bias',
});
const softcap = scoreMod(({ score }) => score.div(2).tanh().mul(2), { name: 'softcap(2)' });
const firstRowsEmpty = maskMod(({ q, kv }) => q.ge(5).and(kv.le(q)), { name: 'rows<5 empty' });
const small = { blockQ: 8, blockKV: 8 };

describe('backward vs the cpu reference (relative L2 ≤ 1e-4)', () => {
  it('no mask, headDimV 8 ≠ headDim 16', () => check({ ...base, headDimV: 8 }));
  it('causal, several blocks', () => check({ ...base, mask: causal() }, small));
  it('sliding window', () =>
    check({ ...base, seqQ: 45, mask: slidingWindow(6, { causal: true }) }, small));
  it('block-sparse pattern with partial and full blocks', async () => {
    const mask = intersect(
      causal(),
      bigBird({ window: 3, globalBlocks: 1, randomBlocks: 1, block: 8, seed: 4, seqKV: 48 }),
    );
    const config = { ...base, seqQ: 48, mask };
    const layout = blockLayout(defineAttention(config), small);
    const full = [...layout.full];
    expect(full).toContain(0);
    expect(full).toContain(1);
    await check(config, small);
  });
  it('ALiBi with learnable slopes, causal', async () => {
    const { got } = await check({ ...base, headsQ: 4, mask: causal(), scoreMod: alibi }, small);
    expect(got.grads[0]?.length).toBe(4);
  });
  it('relative-position bias table', () => check({ ...base, scoreMod: relBias }, small));
  it('GQA 4/2, bshd', () =>
    check({ ...base, batch: 2, headsQ: 4, headsKV: 2, layout: 'bshd', mask: causal() }, small));
  it('MQA 3/1 with ALiBi', () =>
    check({ ...base, headsQ: 3, headsKV: 1, seqQ: 20, scoreMod: alibi }, small));
  it('seqQ < seqKV', () => check({ ...base, seqQ: 9, seqKV: 50 }));
  it('seqQ > seqKV, causal, softcap', () =>
    check({ ...base, seqQ: 50, seqKV: 23, mask: causal(), scoreMod: softcap }, small));
  it('headDim 6, headDimV 5', () => check({ ...base, headDim: 6, headDimV: 5, mask: causal() }));
  it('fully masked rows give zero gradients', async () => {
    const { spec, got } = await check({ ...base, mask: firstRowsEmpty }, small);
    for (let h = 0; h < spec.headsQ; h++)
      for (let q = 0; q < 5; q++)
        for (let d = 0; d < spec.headDim; d++)
          expect(got.dq[(h * spec.seqQ + q) * spec.headDim + d]).toBe(0);
  });
  it('tensor gradients through the global partial buffer', () =>
    check(
      { ...base, headsQ: 4, mask: causal(), scoreMod: alibi },
      { ...small, gradAccumulator: 'global' },
    ));
});

describe('half-precision specs', () => {
  const config = { ...base, headsQ: 4, seqQ: 30, mask: causal(), scoreMod: alibi };
  it('f16: inputs rounded as the forward rounds them (shader-f16 storage where offered)', () =>
    check({ ...config, dtype: 'f16' }));
  it('f16 without shader-f16 (as on Dawn adapters without it)', async () => {
    const plain = await createWebGpuBackend({ disableFeatures: ['shader-f16'] });
    try {
      expect(plain.capabilities.f16).toBe(false);
      const spec = defineAttention({ ...config, dtype: 'f16' });
      const inputs = await backwardInputs(spec, 8);
      const want = (await cpu.backward?.(spec, inputs)) as AttentionGradients;
      expectClose(await plain.backward(spec, inputs), want);
    } finally {
      await plain.dispose();
    }
  });
  it('bf16', () => check({ ...config, dtype: 'bf16' }));
});

describe('linear kernels vs the cpu reference (relative L2 ≤ 1e-4)', () => {
  const lin = { batch: 1, headsQ: 2, seqQ: 45, headDim: 8 };
  const maps = [
    ['elu+1', { type: 'linear', featureMap: 'elu+1' }],
    ['relu', { type: 'linear', featureMap: 'relu' }],
    ['favor+', { type: 'linear', featureMap: 'favor+', features: 16, seed: 3 }],
    ['trig-rf', { type: 'linear', featureMap: 'trig-rf', features: 8, seed: 4 }],
  ] as const;
  // elu+1 and relu share their VJP's form: one mode each; the random maps both.
  for (const [name, kernel] of maps) {
    const causalCase = () =>
      check({
        ...lin,
        headsQ: 4,
        headsKV: 2,
        seqKV: 40,
        layout: 'bshd',
        headDimV: 6,
        mask: causal(),
        kernel,
      });
    if (name !== 'relu') it(`${name}, causal by chunks (GQA 4/2, bshd, seqKV 40)`, causalCase);
    if (name !== 'elu+1') it(`${name}, non-causal`, () => check({ ...lin, kernel }));
  }
});

describe('determinism', () => {
  it('two runs are bit-identical, tensor gradients included (both accumulators)', async () => {
    const spec = defineAttention({
      ...base,
      headsQ: 4,
      headsKV: 2,
      mask: causal(),
      scoreMod: scoreMod(
        ({ score, h, q, kv }) =>
          score.sub(slopes.at(h).mul(q.sub(kv).toFloat())).add(table.at(q.sub(kv).add(REL - 1))),
        { name: 'alibi + relative bias' },
      ),
    });
    const inputs = await backwardInputs(spec, 12);
    for (const gradAccumulator of ['workgroup', 'global'] as const) {
      const a = await gpu.backward(spec, inputs, { ...small, gradAccumulator });
      const b = await gpu.backward(spec, inputs, { ...small, gradAccumulator });
      for (const name of ['dq', 'dk', 'dv'] as const) expect(b[name]).toEqual(a[name]);
      expect(b.grads).toEqual(a.grads);
      expect(a.grads[0]).not.toBeNull();
      expect(a.grads[1]).not.toBeNull();
    }
  });
});

describe('device-resident backward', () => {
  it('chains forward and backward on the device; gradients read back on demand', async () => {
    const spec = defineAttention({ ...base, headsQ: 4, mask: causal(), scoreMod: alibi });
    const x = randomInputs(spec, 41);
    const dOut = randomArray(spec.batch * spec.headsQ * spec.seqQ * spec.headDimV, 42);
    const inputs = gpu.upload(spec, x);
    const outputs = await gpu.runResident(spec, inputs);
    const dOutBuf = gpu.uploadTensor(dOut, 'dOut');
    const g = await gpu.backwardResident(spec, { spec, inputs, outputs, dOut: dOutBuf }, small);
    const got = await gpu.readbackGradients(g);
    const fwd = await gpu.readback(outputs);
    const want = (await cpu.backward?.(spec, { ...x, ...fwd, dOut })) as AttentionGradients;
    expectClose(got, want);
    for (const r of [g, inputs, outputs]) gpu.release(r);
    gpu.release(dOutBuf);
  });
});

describe('errors, before any work', () => {
  const spec = defineAttention({ ...base, mask: causal() });
  it('wrong dOut length: InputError naming dOut', async () => {
    const inputs = await backwardInputs(spec, 1);
    await expect(gpu.backward(spec, { ...inputs, dOut: new Float32Array(3) })).rejects.toThrow(
      InputError,
    );
    await expect(gpu.backward(spec, { ...inputs, dOut: new Float32Array(3) })).rejects.toThrow(
      /dOut/,
    );
  });
  it('NaN in lse: InputError', async () => {
    const inputs = await backwardInputs(spec, 1);
    const lse = inputs.lse.slice();
    lse[2] = Number.NaN;
    await expect(gpu.backward(spec, { ...inputs, lse })).rejects.toThrow(/lse\[2\]/);
  });
  it('a tile that does not fit: ResourceLimitError naming the limit', async () => {
    const inputs = await backwardInputs(spec, 1);
    await expect(gpu.backward(spec, inputs, { blockQ: 4096 })).rejects.toThrow(ResourceLimitError);
  });
  it('bad block size: SpecError', async () => {
    const inputs = await backwardInputs(spec, 1);
    await expect(gpu.backward(spec, inputs, { blockKV: 0 })).rejects.toThrow(SpecError);
  });
  it('linear kernels run (no UnsupportedError)', () => {
    const linear = defineAttention({ ...base, kernel: { type: 'linear', featureMap: 'relu' } });
    expect(gpu.emitBackward(linear).linear).toContain('key_back_pass');
  });
  it("strategy 'naive': UnsupportedError", async () => {
    const inputs = await backwardInputs(spec, 1);
    await expect(gpu.backward(spec, inputs, { strategy: 'naive' })).rejects.toThrow(
      UnsupportedError,
    );
  });
  it('partials larger than maxStorageBufferBindingSize: ResourceLimitError naming the size', () => {
    const big = defineAttention({ ...base, seqQ: 4096, mask: causal(), scoreMod: relBias });
    expect(() =>
      planBackward(big, { ...gpu.capabilities.limits, maxStorageBufferBindingSize: 65536 }),
    ).toThrow(/partials .* bytes\) exceed this device's maxStorageBufferBindingSize \(65536\)/);
  });
  it('resident buffers of another spec: InputError', async () => {
    const other = defineAttention({ ...base });
    const x = randomInputs(other, 2);
    const inputs = gpu.upload(other, x);
    const outputs = await gpu.runResident(other, inputs);
    const dOut = gpu.uploadTensor(randomArray(other.headsQ * other.seqQ * other.headDimV, 3));
    await expect(
      gpu.backwardResident(spec, { spec: other, inputs, outputs, dOut }),
    ).rejects.toThrow(InputError);
    for (const r of [inputs, outputs, dOut]) gpu.release(r);
  });
});
