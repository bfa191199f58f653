// The backward generator without a GPU: the plan's column view, typed errors before any work,
// deterministic source (snapshots), and every backward module compiled by nvcc for sm_90 with no
// register spills (CI has nvcc; a missing nvcc fails with a clear message).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AttentionSpec,
  defineAttention,
  scoreMod,
  tensor,
  UnsupportedError,
} from '@tessera/core';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import { planBackward } from '../src/backward/plan.js';
import { emitBackward } from '../src/backward/softmax.js';
import { compileWithNvcc, findNvcc, nvccVersion } from '../src/runtime/compiler.js';

const slopes = tensor(Float32Array.from({ length: 8 }, (_, h) => 2 ** -(h + 1)));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const table = tensor(new Float32Array(511).fill(0.01));
const relPos = scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(255))), {
  name: 'rel-pos',
});
const softcap = scoreMod(({ score }) => score.div(30).tanh().mul(30), { name: 'softcap-30' });
const base = { batch: 1, headsQ: 8, headsKV: 2, seqQ: 256, headDim: 64 } as const;

export const backwardSpecs: Record<string, AttentionSpec> = {
  'f32 causal gqa': defineAttention({ ...base, dtype: 'f32', mask: causal() }),
  'f32 window alibi bshd': defineAttention({
    ...base,
    dtype: 'f32',
    layout: 'bshd',
    seqKV: 300,
    mask: slidingWindow(64, { causal: true }),
    scoreMod: alibi,
  }),
  'f32 rel-pos D128': defineAttention({ ...base, dtype: 'f32', headDim: 128, scoreMod: relPos }),
  'f32 D512 softcap': defineAttention({ ...base, dtype: 'f32', headDim: 512, scoreMod: softcap }),
  'bf16 causal alibi D128': defineAttention({
    ...base,
    dtype: 'bf16',
    headDim: 128,
    mask: causal(),
    scoreMod: alibi,
  }),
  'f16 bigbird D64': defineAttention({
    ...base,
    dtype: 'f16',
    mask: bigBird({ block: 64, window: 3, globalBlocks: 1, randomBlocks: 1, seed: 1, seqKV: 256 }),
  }),
  'bf16 D40 (CUDA cores)': defineAttention({ ...base, dtype: 'bf16', headDim: 40 }),
};

describe('backward plan', () => {
  it('reduces per-head terms per CTA and position-indexed terms by fixed-point atomics', () => {
    expect(
      planBackward(backwardSpecs['f32 window alibi bshd'] as AttentionSpec).terms,
    ).toMatchObject([{ slot: 0, reduce: 'uniform' }]);
    const rel = planBackward(backwardSpecs['f32 rel-pos D128'] as AttentionSpec);
    expect(rel.terms).toMatchObject([{ slot: 0, reduce: 'scattered' }]);
    expect(rel.fixedCount).toBe(511);
    expect(planBackward(backwardSpecs['f32 D512 softcap'] as AttentionSpec).gradSlots).toEqual([]);
  });

  it('names what it cannot do, before any work', () => {
    const lin = defineAttention({
      ...base,
      dtype: 'f32',
      kernel: { type: 'linear', featureMap: 'elu+1' },
    });
    expect(() => planBackward(lin)).toThrow(UnsupportedError);
    expect(() => planBackward(lin)).toThrow(/backward pass of linear kernels/);
    const odd = backwardSpecs['bf16 D40 (CUDA cores)'] as AttentionSpec;
    expect(() => planBackward(odd, { path: 'mma' })).toThrow(
      /tensor-core backward needs f16\/bf16 and head dims that are multiples of 16 up to 128 \(got bf16, headDim 40/,
    );
    expect(planBackward(odd).path).toBe('simt');
  });
});

describe('emitBackward', () => {
  it('is deterministic', () => {
    for (const s of Object.values(backwardSpecs)) {
      const p = planBackward(s);
      expect(emitBackward(s, p).source).toBe(emitBackward(s, planBackward(s)).source);
    }
  });

  it('matches the snapshots', () => {
    for (const name of ['f32 window alibi bshd', 'bf16 causal alibi D128', 'f32 rel-pos D128']) {
      const s = backwardSpecs[name] as AttentionSpec;
      expect(emitBackward(s, planBackward(s)).source).toMatchSnapshot(name);
    }
  });

  it('compiles every backward module with nvcc for sm_90 without spills', async () => {
    const nvcc = findNvcc();
    expect(
      nvcc,
      'nvcc not found: looked at $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin and PATH',
    ).not.toBeNull();
    const version = await nvccVersion(nvcc as string);
    let source = '';
    Object.entries(backwardSpecs).forEach(([name, s], i) => {
      source += `// case ${name}\nnamespace tsr_bcase_${i} {\n${emitBackward(s, planBackward(s)).source}\n}\n`;
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
    writeFileSync(marker, 'sm_90 backward\n');
  }, 300_000);
});
