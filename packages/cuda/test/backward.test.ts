// The backward pass's generated kernels executed on the host (test/emulator.ts) against the cpu
// backend's backward (f64, an independent implementation), on small shapes: masks with partial, full, skipped
// and empty blocks, GQA, BSHD, seqQ ≠ seqKV, tails, captured-tensor gradients (uniform and
// scattered), softcap, a fully masked row; plus the plan's column view and typed errors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareGradients, GRADIENT_TOLERANCE } from '@tessera/conformance';
import {
  type AttentionSpec,
  type BackwardInputs,
  defineAttention,
  maskMod,
  roundToDtype,
  scoreMod,
  tensor,
  tensorSizes,
} from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import { bigBird, causal, slidingWindow } from '@tessera/patterns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BackwardCase, runBackwardEmulated } from './emulate-backward.js';

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

async function inputsFor(spec: AttentionSpec, seed: number): Promise<BackwardInputs> {
  const sz = tensorSizes(spec);
  const r = (x: Float32Array) => roundToDtype(x, spec.dtype);
  const q = r(seeded(sz.q, seed, 2));
  const k = r(seeded(sz.k, seed + 1, 2));
  const v = r(seeded(sz.v, seed + 2));
  const { out, lse } = await cpu.run(spec, { q, k, v });
  return { q, k, v, out: r(out), lse, dOut: r(seeded(sz.out, seed + 3)) };
}

const slopes = tensor(Float32Array.from([0.5, 0.25, 0.125, 0.0625]));
const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
  name: 'alibi',
});
const S = 40;
const table = tensor(seeded(2 * S - 1, 77, 0.5));
const relPos = scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(S - 1))), {
  name: 'rel-pos',
});
const softcap = scoreMod(({ score }) => score.div(5).tanh().mul(5), { name: 'softcap-5' });
const everyThird = maskMod(({ q, kv }) => q.mod(3).ne(0).and(q.ge(kv)), {
  name: 'every-third-row-masked',
});
const base = { batch: 1, headsQ: 4, headsKV: 2, seqQ: S, headDim: 16, dtype: 'f32' } as const;

const specs: [string, AttentionSpec][] = [
  ['causal gqa 4/2', defineAttention({ ...base, mask: causal() })],
  [
    'sliding window 8, bshd, seqQ 30 ≠ seqKV 45, D 24 / Dv 8',
    defineAttention({
      ...base,
      seqQ: 30,
      seqKV: 45,
      headDim: 24,
      headDimV: 8,
      layout: 'bshd',
      mask: slidingWindow(8, { causal: true }),
    }),
  ],
  [
    'block-sparse (BigBird, block 8), batch 2',
    defineAttention({
      ...base,
      batch: 2,
      seqQ: 48,
      mask: bigBird({ block: 8, window: 3, globalBlocks: 1, randomBlocks: 1, seed: 5, seqKV: 48 }),
    }),
  ],
  [
    'causal + ALiBi slopes (uniform term)',
    defineAttention({ ...base, mask: causal(), scoreMod: alibi }),
  ],
  ['rel-pos table (scattered term), dense', defineAttention({ ...base, scoreMod: relPos })],
  ['softcap, MQA 4/1', defineAttention({ ...base, headsKV: 1, scoreMod: softcap })],
  ['fully masked rows', defineAttention({ ...base, headsKV: 4, mask: everyThird })],
  [
    'bf16 causal + ALiBi, D 24 (CUDA cores)',
    defineAttention({ ...base, headDim: 24, dtype: 'bf16', mask: causal(), scoreMod: alibi }),
  ],
  [
    'mma bf16 causal gqa + ALiBi, seq 80 (two KV blocks, tails)',
    defineAttention({ ...base, seqQ: 80, dtype: 'bf16', mask: causal(), scoreMod: alibi }),
  ],
  [
    'mma f16 window 20, bshd, seqQ 50 ≠ seqKV 70, D 32 / Dv 16, rel-pos',
    defineAttention({
      ...base,
      seqQ: 50,
      seqKV: 70,
      headDim: 32,
      headDimV: 16,
      dtype: 'f16',
      layout: 'bshd',
      mask: slidingWindow(20, { causal: true }),
      scoreMod: scoreMod(({ score, q, kv }) => score.add(table.at(q.sub(kv).add(S - 1))), {
        name: 'rel-pos',
      }),
    }),
  ],
  [
    'mma bf16 fully masked rows, softcap',
    defineAttention({ ...base, dtype: 'bf16', mask: everyThird, scoreMod: softcap }),
  ],
];

describe('cuda backward (emulated) vs the cpu backward', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsr-cuda-bwd-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const cases: BackwardCase[] = await Promise.all(
    specs.map(async ([name, spec], i) => ({
      name,
      spec,
      inputs: await inputsFor(spec, 11 + 7 * i),
    })),
  );
  let results: ReturnType<typeof runBackwardEmulated> = [];
  // One host program for every case (g++ dominates): built and run once, before the checks.
  beforeAll(() => {
    results = runBackwardEmulated(dir, cases);
  }, 240_000);
  const get = () => results;
  cases.forEach((c, i) => {
    it(c.name, async () => {
      const got = get()[i];
      if (!got) throw new Error('no result');
      if (!cpu.backward) throw new Error('cpu backend has no backward');
      const ref = await cpu.backward(c.spec, c.inputs);
      // Tolerances: the catalogue's per dtype (f32 2e-4 on dq/dk/dv, 1e-3 on tensors).
      const cmp = compareGradients(got, ref, GRADIENT_TOLERANCE[c.spec.dtype], {
        spec: c.spec,
        lse: c.inputs.lse,
      });
      expect(cmp.message).toBe('');
      expect(cmp.pass).toBe(true);
    });
  });
});
