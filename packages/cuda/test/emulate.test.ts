// Generated kernels executed on the host (test/emulator.ts) and compared with the cpu backend:
// both softmax paths and the linear kernels, over masks with partial, full, skipped and empty
// rows, tails, GQA, BSHD, odd head dims, captured tensors and the hash. This is what stands in
// for a GPU in CI; the H100 run (bench/h100) checks the same kernels on the device.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareOutputs, conformanceCases, DTYPE_TOLERANCE } from '@tessera/conformance';
import {
  type AttentionInputs,
  type AttentionSpec,
  defineAttention,
  maskMod,
  roundToDtype,
  scoreMod,
  tensor,
  tensorSizes,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { bigBird, causal } from '@tessera/patterns';
import { afterAll, describe, expect, it } from 'vitest';
import { emitCuda } from '../src/emit/index.js';
import { generatorCases } from './cases.js';
import { type EmulatedCase, runEmulated } from './emulator.js';

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

function inputsFor(spec: AttentionSpec, seed: number): AttentionInputs {
  const sz = tensorSizes(spec);
  const r = (x: Float32Array) => roundToDtype(x, spec.dtype);
  return {
    q: r(seeded(sz.q, seed, 2)),
    k: r(seeded(sz.k, seed + 1, 2)),
    v: r(seeded(sz.v, seed + 2)),
  };
}

const own = (name: string, spec: AttentionSpec, seed: number): EmulatedCase => ({
  name,
  spec,
  inputs: inputsFor(spec, seed),
});

const slopes = tensor(Float32Array.from([0.25, 0.0625]));
const alibi = scoreMod(
  ({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).abs().toFloat())),
  {
    name: 'alibi',
  },
);
const everyThird = maskMod(({ q, kv }) => q.mod(3).ne(0).and(q.ge(kv)), {
  name: 'every-third-row-masked',
});

const cases: EmulatedCase[] = [
  own(
    'mma bf16 causal gqa, tail (D64: 2 m-tiles/warp, 64 keys)',
    defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV: 2,
      seqQ: 100,
      headDim: 64,
      dtype: 'bf16',
      mask: causal(),
    }),
    1,
  ),
  own(
    'mma bf16 rows fully masked',
    defineAttention({
      batch: 1,
      headsQ: 2,
      seqQ: 70,
      headDim: 32,
      dtype: 'bf16',
      mask: everyThird,
    }),
    2,
  ),
  own(
    'mma f16 D128 (32 keys) window + alibi, bshd',
    (() => {
      return defineAttention({
        batch: 1,
        headsQ: 2,
        headsKV: 1,
        seqQ: 70,
        seqKV: 90,
        headDim: 128,
        dtype: 'f16',
        layout: 'bshd',
        mask: maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(40)), { name: 'window-40' }),
        scoreMod: alibi,
      });
    })(),
    3,
  ),
  own(
    'mma bf16 D40/96 hashed mask per batch and head',
    generatorCases['mma-hdim-40-96'] as AttentionSpec,
    4,
  ),
  own(
    'mma bf16 D256 softcap (1 m-tile/warp)',
    defineAttention({
      batch: 1,
      headsQ: 1,
      seqQ: 40,
      headDim: 256,
      dtype: 'bf16',
      scoreMod: scoreMod(({ score }) => score.div(5).tanh().mul(5), { name: 'softcap-5' }),
    }),
    5,
  ),
  own('simt f32 document + alibi', generatorCases['simt-f32-document'] as AttentionSpec, 6),
  own('simt f32 odd dims bshd', generatorCases['simt-f32-odd-dims'] as AttentionSpec, 7),
  own('simt bf16 D20 causal', generatorCases['simt-bf16-hdim-20'] as AttentionSpec, 8),
  own('linear elu+1 causal gqa', generatorCases['linear-elu-causal'] as AttentionSpec, 9),
  own('linear relu bf16', generatorCases['linear-relu-bf16'] as AttentionSpec, 10),
  own('linear favor+ causal bshd', generatorCases['linear-favor-causal-bshd'] as AttentionSpec, 11),
  own('linear trig-rf f16', generatorCases['linear-trig-f16'] as AttentionSpec, 12),
];
// The other tile shapes the bench sweeps, and 16-row tiles with 16 keys (Q fragments in registers).
const tiled = defineAttention({
  batch: 1,
  headsQ: 2,
  seqQ: 100,
  headDim: 64,
  dtype: 'bf16',
  mask: causal(),
});
for (const options of [
  { blockQ: 128, blockKV: 64, warpTiles: 1 },
  { blockQ: 64, blockKV: 32, warpTiles: 2 },
  { blockQ: 16, blockKV: 16, warpTiles: 1 },
  { blockQ: 128, blockKV: 64, warpTiles: 2, lazyRescale: true },
  { blockQ: 32, blockKV: 16, warpTiles: 2, lazyRescale: true, schedule: 'grid' },
  { blockQ: 64, blockKV: 128, warpTiles: 1, lazyRescale: true },
] as const) {
  cases.push({
    ...own(`mma bf16 causal tiles ${JSON.stringify(options)}`, tiled, 20),
    options,
  });
}
// The longest-row-first schedule on a layout with one long (global) row per head, GQA, and the
// same layout with the lazy rescale (rows whose max moves late).
for (const [i, options] of [{}, { lazyRescale: true, blockKV: 32 }].entries()) {
  cases.push({
    ...own(
      `mma bf16 bigbird gqa ${JSON.stringify(options)}`,
      defineAttention({
        batch: 2,
        headsQ: 4,
        headsKV: 2,
        seqQ: 160,
        headDim: 64,
        dtype: 'bf16',
        mask: bigBird({
          window: 3,
          globalBlocks: 1,
          randomBlocks: 1,
          block: 32,
          seqKV: 160,
          seed: 5,
        }),
      }),
      30 + i,
    ),
    options,
  });
}
for (const c of conformanceCases({
  filter: (c) =>
    [
      'masked/everything',
      'masked/every-third-row',
      'masked/score-minus-infinity',
      'extreme/scores-1e4',
      'size/seq-1',
      'tensor/relative-bias',
    ].includes(c.id),
})) {
  const { spec, inputs } = c.build();
  cases.push({ name: `catalogue ${c.id}`, spec, inputs });
}

const dir = mkdtempSync(join(tmpdir(), 'tessera-emulate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('generated kernels on the host emulator', () => {
  it('match the cpu backend within the dtype tolerance', async () => {
    const cpu = await createCpuBackend();
    const got = runEmulated(dir, cases);
    const problems: string[] = [];
    for (const [i, c] of cases.entries()) {
      const ref = await cpu.run(c.spec, c.inputs);
      const r = compareOutputs(got[i] as never, ref, DTYPE_TOLERANCE[c.spec.dtype]);
      if (!r.pass) problems.push(`${c.name} (${emitCuda(c.spec, c.options).path}): ${r.message}`);
    }
    await cpu.dispose();
    expect(problems).toEqual([]);
  }, 600_000);
});
