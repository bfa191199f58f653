// Every kernel the generator emits for the conformance catalogue (and this package's own generator
// cases) must compile with nvcc for sm_80 and sm_90. CI has nvcc but no GPU; a missing nvcc fails
// this test with a clear message rather than skipping it. Sources are deduplicated by hash and
// compiled in parallel, one nvcc per core.
import { createHash } from 'node:crypto';
import { cpus } from 'node:os';
import type { AttentionSpec } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { emitCuda } from '../src/emit/index.js';
import { compileWithNvcc, findNvcc } from '../src/runtime/compiler.js';
import { generatorCases } from './cases.js';
import { catalogueSpecs } from './catalogue.js';

const ARCHS = ['sm_80', 'sm_90'];

async function pool<T>(
  items: readonly T[],
  width: number,
  f: (x: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await f(items[next++] as T);
    }),
  );
}

describe('generated CUDA compiles with nvcc', () => {
  it('finds nvcc (CI installs the CUDA toolkit; set NVCC or CUDA_HOME if it lives elsewhere)', () => {
    expect(
      findNvcc(),
      'nvcc not found: looked at $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin and PATH',
    ).not.toBeNull();
  });

  it('compiles every catalogue and generator kernel for sm_80 and sm_90 without spills', async () => {
    const specs: [string, AttentionSpec][] = [
      ...catalogueSpecs(),
      ...Object.entries(generatorCases),
    ];
    const sources = new Map<string, { name: string; source: string }>();
    for (const [name, spec] of specs) {
      const { source } = emitCuda(spec);
      const key = createHash('sha256').update(source).digest('hex');
      if (!sources.has(key)) sources.set(key, { name, source });
    }
    expect(sources.size).toBeGreaterThanOrEqual(Object.keys(generatorCases).length);
    const jobs = [...sources.values()].flatMap((s) => ARCHS.map((arch) => ({ ...s, arch })));
    const failures: string[] = [];
    const spills: string[] = [];
    await pool(jobs, Math.max(2, cpus().length), async (job) => {
      try {
        const { log } = await compileWithNvcc(job.source, {
          arch: job.arch,
          extraArgs: ['-Xptxas', '-v'],
        });
        for (const m of log.matchAll(/(\d+) bytes spill stores/g)) {
          if (Number(m[1]) > 64) spills.push(`${job.name} (${job.arch}): ${m[0]}`);
        }
      } catch (e) {
        failures.push(`${job.name} (${job.arch}): ${(e as Error).message.slice(0, 2000)}`);
      }
    });
    expect(failures).toEqual([]);
    expect(spills).toEqual([]);
  }, 240_000);
});
