// The backward pass of linear kernels (src/backward/linear.ts) without a GPU: the whole backend on
// the emulated device (test/gradient-emulated-addon.cjs: the generated kernels compiled for the
// host and run there) against the cpu backend's backward, with the catalogue's tolerances; plus
// deterministic source (snapshots), typed errors, and every module compiled by nvcc for sm_90.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareGradients, GRADIENT_TOLERANCE } from '@tessera/conformance';
import {
  type AttentionSpec,
  type BackwardInputs,
  defineAttention,
  type FeatureMap,
  roundToDtype,
  tensorSizes,
  UnsupportedError,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { causal } from '@tessera/patterns';
import { afterAll, describe, expect, it } from 'vitest';
import { emitLinearBackward, planLinearBackward } from '../src/backward/linear.js';
import { compileWithNvcc, findNvcc, nvccVersion } from '../src/runtime/compiler.js';

const tmp = mkdtempSync(join(tmpdir(), 'tessera-linear-backward-'));
process.env.TESSERA_CUDA_ADDON = join(import.meta.dirname, 'gradient-emulated-addon.cjs');
process.env.TESSERA_CUDA_CACHE = join(tmp, 'cache');
process.env.TESSERA_EMU_DIR = join(tmp, 'emu');
const { createCudaBackend } = await import('../src/index.js');

function seeded(n: number, seed: number, amp = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
  return out;
}

const cpu = await createCpuBackend();
const cuda = await createCudaBackend();
afterAll(async () => {
  await cuda.dispose();
  await cpu.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

async function inputsFor(
  spec: AttentionSpec,
  seed: number,
  amp: number,
  edit?: (q: Float32Array, spec: AttentionSpec) => void,
): Promise<BackwardInputs> {
  const sz = tensorSizes(spec);
  const r = (x: Float32Array) => roundToDtype(x, spec.dtype);
  const q = r(seeded(sz.q, seed, amp));
  edit?.(q, spec);
  const k = r(seeded(sz.k, seed + 1, amp));
  const v = r(seeded(sz.v, seed + 2));
  const { out, lse } = await cpu.run(spec, { q, k, v });
  return { q, k, v, out: r(out), lse, dOut: r(seeded(sz.out, seed + 3)) };
}

/** Odd rows of q all ≤ 0 (bhsd, head 0): relu features 0, den 0, rows with no attention mass. */
function negateOddRows(q: Float32Array, spec: AttentionSpec): void {
  for (let s = 1; s < spec.seqQ; s += 2)
    for (let d = 0; d < spec.headDim; d++)
      q[s * spec.headDim + d] = -Math.abs(q[s * spec.headDim + d] as number);
}

const kernelOf = (featureMap: FeatureMap) =>
  featureMap === 'favor+' || featureMap === 'trig-rf'
    ? ({
        type: 'linear',
        featureMap,
        features: featureMap === 'favor+' ? 48 : 24,
        seed: 7,
      } as const)
    : ({ type: 'linear', featureMap } as const);

const maps: FeatureMap[] = ['elu+1', 'relu', 'favor+', 'trig-rf'];
// GQA 4/2, seqQ ≠ seqKV, D ≠ Dv, more than one chunk of 64 (so the causal pass rescales its sums).
const cases: [string, AttentionSpec][] = maps.flatMap((featureMap) =>
  [false, true].map((isCausal): [string, AttentionSpec] => [
    `${featureMap} ${isCausal ? 'causal' : 'non-causal'} gqa 4/2`,
    defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: isCausal ? 150 : 70,
      seqKV: isCausal ? 90 : 140,
      headDim: 16,
      headDimV: 40,
      kernel: kernelOf(featureMap),
      mask: isCausal ? causal() : undefined,
    }),
  ]),
);
cases.push(
  [
    'favor+ causal MQA 3/1, batch 2, bshd, seqQ 40 < seqKV 75',
    defineAttention({
      batch: 2,
      headsQ: 3,
      headsKV: 1,
      seqQ: 40,
      seqKV: 75,
      headDim: 12,
      layout: 'bshd',
      kernel: kernelOf('favor+'),
      mask: causal(),
    }),
  ],
  [
    'elu+1 causal bf16',
    defineAttention({
      batch: 1,
      headsQ: 2,
      headsKV: 2,
      seqQ: 80,
      headDim: 16,
      dtype: 'bf16',
      kernel: kernelOf('elu+1'),
      mask: causal(),
    }),
  ],
  [
    'relu, rows with no attention mass',
    defineAttention({
      batch: 1,
      headsQ: 2,
      headsKV: 2,
      seqQ: 20,
      headDim: 4,
      kernel: kernelOf('relu'),
      mask: causal(),
    }),
  ],
);

describe('cuda linear backward (emulated device) vs the cpu backward', () => {
  cases.forEach(([name, spec], i) => {
    it.concurrent(name, async () => {
      const amp = spec.kernel.type === 'linear' && spec.kernel.featureMap === 'trig-rf' ? 0.5 : 2;
      const noMass = name.startsWith('relu, rows');
      const inputs = await inputsFor(spec, 101 + 13 * i, amp, noMass ? negateOddRows : undefined);
      if (noMass)
        expect(inputs.lse.filter((x) => x === Number.NEGATIVE_INFINITY).length).toBeGreaterThan(5);
      const got = await cuda.backward(spec, inputs);
      const ref = await cpu.backward?.(spec, inputs);
      if (!ref) throw new Error('cpu backend has no backward');
      const tol =
        spec.kernel.type === 'linear' && spec.kernel.featureMap === 'trig-rf'
          ? { qkv: 5e-3, tensors: 1e-2 } // the catalogue's trig-rf bound (normaliser near 0)
          : GRADIENT_TOLERANCE[spec.dtype];
      const cmp = compareGradients(got, ref, tol, { spec, lse: inputs.lse });
      expect(cmp.message).toBe('');
      expect(cmp.pass).toBe(true);
    }, 300_000);
  });
});

describe('benchmarkBackward', () => {
  it('times the backward alone on device events and reports its scratch', async () => {
    const [, spec] = cases[4] as [string, AttentionSpec]; // favor+ non-causal gqa
    const sets = [await inputsFor(spec, 5, 2), await inputsFor(spec, 6, 2)];
    const r = await cuda.benchmarkBackward(spec, sets, { warmup: 1, repeat: 3 });
    expect(r.timing).toBe('device');
    expect(r.timesMs).toHaveLength(3);
    // features, chunk maxima, partials, ρ, D and the random matrix; nothing N × N.
    const plan = planLinearBackward(spec);
    const floats = Object.values(plan.scratch).reduce((a, b) => a + b, 0);
    const w = 48 * spec.headDim;
    expect(r.extraDeviceBytes).toBe(4 * (floats + w));
    // O(N), never N × N: twice the sequence, twice the scratch (N × N would be four times).
    const twice = defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 2 * spec.seqQ,
      seqKV: 2 * spec.seqKV,
      headDim: 16,
      headDimV: 40,
      kernel: kernelOf('favor+'),
    });
    const floats2 = Object.values(planLinearBackward(twice).scratch).reduce((a, b) => a + b, 0);
    expect(floats2).toBeLessThanOrEqual(2 * floats); // chunk counts round up
    expect(floats2).toBeGreaterThan(1.99 * floats);
    // inputs of both sets (f32: q, k, v, out, dOut, lse) and the gradients are held at the peak.
    const sz = tensorSizes(spec);
    const held = 4 * 2 * (sz.q + sz.k + sz.v + 2 * sz.out + sz.lse) + 4 * (sz.q + sz.k + sz.v);
    expect(r.peakDeviceBytes).toBeGreaterThanOrEqual(held);
    await expect(cuda.benchmarkBackward(spec, [], { warmup: 0, repeat: 1 })).rejects.toThrow(
      /at least one input set/,
    );
    const short = { ...(sets[0] as BackwardInputs), dOut: new Float32Array(3) };
    await expect(cuda.benchmarkBackward(spec, [short], { warmup: 0, repeat: 1 })).rejects.toThrow(
      /dOut/,
    );
  }, 300_000);
});

describe('emitLinearBackward', () => {
  const [, favorCausal] = cases[5] as [string, AttentionSpec];
  const [, eluPlain] = cases[0] as [string, AttentionSpec];
  it('is deterministic and matches the snapshots', () => {
    for (const [, s] of cases)
      expect(emitLinearBackward(s, planLinearBackward(s)).source).toBe(
        emitLinearBackward(s, planLinearBackward(s)).source,
      );
    expect(emitLinearBackward(favorCausal, planLinearBackward(favorCausal)).source).toMatchSnapshot(
      'favor+ causal gqa',
    );
    expect(emitLinearBackward(eluPlain, planLinearBackward(eluPlain)).source).toMatchSnapshot(
      'elu+1 non-causal gqa',
    );
  });

  it('plans chunks by feature count and names what it cannot do', () => {
    expect(planLinearBackward(favorCausal)).toMatchObject({
      path: 'linear',
      features: 48,
      chunk: 64,
      chunks: 3,
      colBlocks: 2,
      causal: true,
    });
    const wide = defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 8,
      headDim: 16,
      kernel: { type: 'linear', featureMap: 'trig-rf', features: 300 },
    });
    expect(() => planLinearBackward(wide)).toThrow(UnsupportedError);
    expect(() => planLinearBackward(wide)).toThrow(/up to 512 features \(got 600\)/);
    // Synchronously, as planning does: before any device work.
    expect(() => cuda.prepareBackward(eluPlain, { path: 'mma' })).toThrow(
      /no tensor-core backward/,
    );
  });

  it('compiles every linear backward module with nvcc for sm_90 without spills', async () => {
    const nvcc = findNvcc();
    expect(
      nvcc,
      'nvcc not found: looked at $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin and PATH',
    ).not.toBeNull();
    const version = await nvccVersion(nvcc as string);
    const big = (featureMap: FeatureMap, features: number | undefined, headDim: number) =>
      defineAttention({
        batch: 1,
        headsQ: 8,
        headsKV: 2,
        seqQ: 1024,
        headDim,
        dtype: 'bf16',
        kernel: { type: 'linear', featureMap, features, seed: 3 },
        mask: causal(),
      });
    const specs = [
      ...cases.map(([, s]) => s),
      big('favor+', 256, 128),
      big('trig-rf', 256, 64),
      big('elu+1', undefined, 128),
    ];
    let source = '';
    specs.forEach((s, i) => {
      source += `namespace tsr_lcase_${i} {\n${emitLinearBackward(s, planLinearBackward(s)).source}\n}\n`;
    });
    const markers = join(
      import.meta.dirname,
      '..',
      '..',
      '..',
      'node_modules',
      '.cache',
      'tessera-cuda-nvcc',
    );
    const marker = join(
      markers,
      createHash('sha256').update(`${version}\0sm_90\0${source}`).digest('hex'),
    );
    if (existsSync(marker)) return;
    const { log } = await compileWithNvcc(source, { arch: 'sm_90', extraArgs: ['-Xptxas', '-v'] });
    const spills = [...log.matchAll(/(\d+) bytes spill stores/g)].filter((m) => Number(m[1]) > 64);
    expect(spills.map((m) => m[0])).toEqual([]);
    mkdirSync(markers, { recursive: true });
    writeFileSync(marker, 'sm_90 linear backward\n');
  }, 300_000);
});
