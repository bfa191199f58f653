// `run.mjs --sweep`: the tensor-core kernel's options side by side in one device call (under
// five minutes). (1) Each variant against the cpu backend on small bf16 D=128 cases (dense, causal
// with GQA, a sliding window with ALiBi, BigBird); (2) each variant timed with CUDA events (median
// of 10 after 3 warm-ups, 3 rotated input sets) on dense N=4096 and 16384, causal 16384, sliding
// window 1024 and BigBird at 16384 (B=1, H=32, D=128), with SDPA / FlexAttention in the same run.
// Prints one Markdown table (TFLOP/s, and time relative to the first variant and to the peer).
import { compareOutputs, DTYPE_TOLERANCE } from '@tessera/conformance';
import {
  type AttentionSpec,
  defineAttention,
  type Mask,
  roundToDtype,
  type ScoreMod,
  scoreMod,
  tensor,
  tensorSizes,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';
import type { CudaBackend, CudaRunOptions } from '../../src/index.js';

/** The variants the sweep compares; the first is the generator's default. */
export const SWEEP_VARIANTS: { name: string; options: CudaRunOptions }[] = [
  { name: 'default (128x32/2, lpt)', options: {} },
  { name: 'grid order (previous kernel)', options: { schedule: 'grid' } },
  { name: '128x32/2 lazy', options: { lazyRescale: true } },
  { name: '128x64/2 lazy', options: { blockKV: 64, warpTiles: 2, lazyRescale: true } },
  { name: '128x64/1 (8 warps, Q in regs)', options: { blockKV: 64, warpTiles: 1 } },
  { name: '128x64/1 lazy', options: { blockKV: 64, warpTiles: 1, lazyRescale: true } },
  { name: '64x64/1 lazy', options: { blockQ: 64, blockKV: 64, warpTiles: 1, lazyRescale: true } },
  { name: '128x128/1 lazy', options: { blockKV: 128, warpTiles: 1, lazyRescale: true } },
];

export const SWEEP_CASES = [
  'dense/N=4096',
  'dense/N=16384',
  'causal/N=16384',
  'window-1024/N=16384',
  'bigbird/N=16384',
];

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

function checkSpecs(): { name: string; spec: AttentionSpec }[] {
  const slopes = tensor(Float32Array.from({ length: 4 }, (_, h) => 2 ** -(h + 1)));
  const alibi: ScoreMod = scoreMod(
    ({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).abs().toFloat())),
    { name: 'alibi' },
  );
  const mk = (name: string, seq: number, headsKV: number, mask?: Mask, mod?: ScoreMod) => ({
    name,
    spec: defineAttention({
      batch: 1,
      headsQ: 4,
      headsKV,
      seqQ: seq,
      headDim: 128,
      dtype: 'bf16',
      mask,
      scoreMod: mod,
    }),
  });
  return [
    mk('dense N=333', 333, 4),
    mk('causal gqa N=1000', 1000, 2, causal()),
    mk('window-200 alibi N=777', 777, 4, slidingWindow(200, { causal: true }), alibi),
    mk(
      'bigbird mqa N=1024',
      1024,
      1,
      bigBird({ window: 3, globalBlocks: 1, randomBlocks: 2, block: 128, seed: 1, seqKV: 1024 }),
    ),
  ];
}

/** Every variant on every check spec against cpu; returns failures (empty when all pass). */
export async function sweepCorrectness(
  cuda: CudaBackend,
  log: (s: string) => void,
): Promise<string[]> {
  const cpu = await createCpuBackend();
  const failures: string[] = [];
  let worst = 0;
  for (const [i, { name, spec }] of checkSpecs().entries()) {
    const sz = tensorSizes(spec);
    const r = (x: Float32Array) => roundToDtype(x, 'bf16');
    const inputs = {
      q: r(seeded(sz.q, 100 + i, 2)),
      k: r(seeded(sz.k, 200 + i, 2)),
      v: r(seeded(sz.v, 300 + i)),
    };
    const ref = await cpu.run(spec, inputs);
    for (const v of SWEEP_VARIANTS) {
      try {
        const got = await cuda.run(spec, inputs, v.options);
        const c = compareOutputs(got, ref, DTYPE_TOLERANCE.bf16);
        worst = Math.max(worst, c.relErr);
        if (!c.pass) failures.push(`${v.name} / ${name}: ${c.message}`);
      } catch (e) {
        failures.push(`${v.name} / ${name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }
  await cpu.dispose();
  log(
    `sweep correctness: ${SWEEP_VARIANTS.length} variants × ${checkSpecs().length} cases vs cpu, ${failures.length} failures, worst out error ${worst.toPrecision(2)}`,
  );
  for (const f of failures) log(`FAIL ${f}`);
  return failures;
}
