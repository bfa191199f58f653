// Bad input and over-limit specs get typed errors naming what is wrong; a lost device is typed too.
import {
  defineAttention,
  InputError,
  maskMod,
  ResourceLimitError,
  SpecError,
  UnsupportedError,
} from '@tessera/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createWebGpuBackend, DeviceLostError, type WebGpuBackend } from '../src/index.js';
import { denseReference, maxRelError, randomInputs } from './reference.js';

// Software Vulkan compiles each new pipeline on first use; under a loaded 2-core CI that can take long.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

let backend: WebGpuBackend;
beforeAll(async () => {
  backend = await createWebGpuBackend();
});
afterAll(async () => {
  await backend?.dispose();
});

const spec = defineAttention({ batch: 1, headsQ: 2, seqQ: 16, headDim: 8 });

describe('input errors', () => {
  it('rejects a tensor of the wrong length', async () => {
    const x = randomInputs(spec, 1);
    await expect(backend.run(spec, { ...x, q: x.q.subarray(1) })).rejects.toThrow(InputError);
    await expect(backend.run(spec, { ...x, q: x.q.subarray(1) })).rejects.toThrow(
      /q has 255 elements/,
    );
  });
  it('rejects non-finite values', async () => {
    const x = randomInputs(spec, 2);
    x.k[5] = Number.NaN;
    await expect(backend.run(spec, x)).rejects.toThrow(/k\[5\] is NaN/);
  });
  it('rejects resident inputs uploaded for another spec', async () => {
    const other = defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 16,
      headDim: 8,
      mask: maskMod(({ q, kv }) => q.ge(kv)),
    });
    const resident = backend.upload(spec, randomInputs(spec, 3));
    await expect(backend.runResident(other, resident)).rejects.toThrow(InputError);
    backend.release(resident);
  });
  it('rejects a tile whose blockQ is not a multiple of rowsPerThread', async () => {
    await expect(
      backend.run(spec, randomInputs(spec, 4), { blockQ: 10, rowsPerThread: 4 }),
    ).rejects.toThrow(SpecError);
  });
  it('runs linear kernels only with the tiled strategy', async () => {
    const lin = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 8,
      headDim: 4,
      kernel: { type: 'linear', featureMap: 'elu+1' },
    });
    await expect(backend.run(lin, randomInputs(lin, 5), { strategy: 'naive' })).rejects.toThrow(
      UnsupportedError,
    );
  });
});

describe('device limits', () => {
  it('names maxComputeWorkgroupStorageSize when an explicit tile does not fit', async () => {
    const big = defineAttention({ batch: 1, headsQ: 1, seqQ: 64, headDim: 64 });
    const run = backend.run(big, randomInputs(big, 6), { blockQ: 64, blockKV: 512 });
    await expect(run).rejects.toThrow(ResourceLimitError);
    await expect(
      backend.run(big, randomInputs(big, 6), { blockQ: 64, blockKV: 512 }),
    ).rejects.toThrow(/maxComputeWorkgroupStorageSize/);
  });
  it('names maxComputeWorkgroupStorageSize when no tile fits the head dimension', async () => {
    const wide = defineAttention({ batch: 1, headsQ: 1, seqQ: 4, headDim: 8192 });
    await expect(backend.run(wide, randomInputs(wide, 7))).rejects.toThrow(
      /maxComputeWorkgroupStorageSize/,
    );
  });
  it('names maxComputeInvocationsPerWorkgroup for too many threads', async () => {
    const small = await createWebGpuBackend({ limits: { maxComputeInvocationsPerWorkgroup: 64 } });
    try {
      await expect(
        small.run(spec, randomInputs(spec, 8), { blockQ: 128, blockKV: 4 }),
      ).rejects.toThrow(/maxComputeInvocationsPerWorkgroup \(64\)/);
    } finally {
      await small.dispose();
    }
  });
  it('refuses the naive score buffer over maxStorageBufferBindingSize, while the fused kernel runs', async () => {
    const small = await createWebGpuBackend({ limits: { maxStorageBufferBindingSize: 1 << 16 } });
    try {
      const s = defineAttention({ batch: 1, headsQ: 2, seqQ: 100, headDim: 8 });
      const x = randomInputs(s, 9);
      await expect(small.run(s, x, { strategy: 'naive' })).rejects.toThrow(ResourceLimitError);
      await expect(small.run(s, x, { strategy: 'naive' })).rejects.toThrow(
        /score buffer.*80000 bytes.*maxStorageBufferBindingSize \(65536\)/,
      );
      const got = await small.run(s, x);
      expect(maxRelError(got.out, denseReference(s, x).out)).toBeLessThan(1e-4);
    } finally {
      await small.dispose();
    }
  });
  it('refuses inputs larger than a storage binding', async () => {
    const small = await createWebGpuBackend({ limits: { maxStorageBufferBindingSize: 1 << 12 } });
    try {
      const s = defineAttention({ batch: 1, headsQ: 2, seqQ: 100, headDim: 8 });
      expect(() => small.upload(s, randomInputs(s, 10))).toThrow(/q needs 6400 bytes/);
    } finally {
      await small.dispose();
    }
  });
});

describe('device loss', () => {
  it('surfaces a lost device as DeviceLostError', async () => {
    const doomed = await createWebGpuBackend();
    doomed.gpuDevice.destroy();
    await doomed.gpuDevice.lost;
    const err = await doomed.run(spec, randomInputs(spec, 11)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceLostError);
    expect((err as DeviceLostError).code).toBe('ERR_DEVICE_LOST');
    await doomed.dispose();
  });
});
