// Every shader the conformance catalogue produces compiles: each case's spec, with the fused
// kernel (default and two other tiles), the naive baseline and f16 storage, checked with
// getCompilationInfo (Tint's full WGSL validation; pipelines are not built, to keep it quick).
import { conformanceCases } from '@tessera/conformance';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createWebGpuBackend, emitWgsl, type WebGpuBackend } from '../src/index.js';

// Software Vulkan compiles each new pipeline on first use; under a loaded 2-core CI that can take long.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

let backend: WebGpuBackend;
beforeAll(async () => {
  backend = await createWebGpuBackend();
});
afterAll(async () => {
  await backend?.dispose();
});

async function compileErrors(code: string): Promise<string[]> {
  const device = backend.gpuDevice;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const scoped = await device.popErrorScope();
  const errors = info.messages
    .filter((m) => m.type === 'error')
    .map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
  if (scoped && errors.length === 0) errors.push(scoped.message);
  return errors;
}

describe('every catalogue shader compiles', () => {
  const cases = conformanceCases({ profile: 'ci' });
  it('has cases', () => {
    expect(cases.length).toBeGreaterThan(10);
  });
  for (const c of cases) {
    it(c.id, async () => {
      const { spec } = c.build();
      const limits = backend.capabilities.limits;
      const sources: [string, string][] = [['default', backend.emit(spec)]];
      if (spec.kernel.type === 'softmax') {
        sources.push(
          ['naive', backend.emit(spec, { strategy: 'naive' })],
          [
            'unrolled 16x8 r2',
            emitWgsl(spec, { limits, blockQ: 16, blockKV: 8, rowsPerThread: 2, unroll: true }),
          ],
          [
            'queries in registers',
            emitWgsl(spec, { limits, qStage: 'private', blockQ: 32, blockKV: 8 }),
          ],
        );
      }
      if (backend.capabilities.f16)
        sources.push(['f16 storage', emitWgsl(spec, { limits, storage: 'f16' })]);
      for (const [name, code] of sources) {
        expect(await compileErrors(code), `${c.id} (${name})`).toEqual([]);
      }
    });
  }
});
