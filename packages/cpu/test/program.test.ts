import { defineAttention, defineProgram, maskMod, runProgram, SpecError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { seeded } from './util.js';

// The program steps' results are checked by the program catalogue (tooling/conformance,
// test/program-conformance.test.ts: cpu against an independent brute-force interpreter). Here:
// the errors defineProgram and runProgram give, with the messages they name.

const H = 4;
const HK = 2;
const N = 45;
const D = 8;
const k = seeded(1 * HK * N * D, 11, 1, 2);
const shapes = { q: [1, H, N, D], k: [1, HK, N, D], v: [1, HK, N, D] } as const;
const causal = defineAttention({
  batch: 1,
  headsQ: H,
  headsKV: HK,
  seqQ: N,
  seqKV: N,
  headDim: D,
  mask: maskMod(({ q, kv }) => kv.le(q), { name: 'causal' }),
});

describe('cpu programs', () => {
  it('rejects bad programs and inputs with messages naming the problem', async () => {
    const cpu = await createCpuBackend();
    expect(() =>
      defineProgram({
        inputs: { k: shapes.k },
        steps: [{ op: 'pool', out: 'p', x: 'nope', block: 4 }],
        outputs: ['p'],
      }),
    ).toThrow(/step 0 \(pool\): x 'nope' is not a tensor/);
    expect(() =>
      defineProgram({
        inputs: shapes,
        steps: [{ op: 'attend', out: 'o', spec: causal, q: 'k', k: 'k', v: 'v' }],
        outputs: ['o'],
      }),
    ).toThrow(SpecError);
    expect(() =>
      defineProgram({
        inputs: { ...shapes, qp: [1, H, 6, D], kp: [1, HK, 6, D] },
        steps: [
          {
            op: 'select',
            out: 's',
            q: 'qp',
            k: 'kp',
            spec: causal,
            blockQ: 8,
            blockKV: 8,
            topK: 1,
            local: 2,
          },
        ],
        outputs: ['qp'],
      }),
    ).toThrow(/topK 1 cannot hold/);
    const p = defineProgram({
      inputs: { k: shapes.k },
      steps: [{ op: 'pool', out: 'p', x: 'k', block: 4 }],
      outputs: ['p'],
    });
    await expect(runProgram(cpu, p, { k: k.subarray(1) })).rejects.toThrow(
      /input 'k' must have 720 elements/,
    );
    const bad = Float32Array.from(k);
    bad[3] = Number.NaN;
    await expect(runProgram(cpu, p, { k: bad })).rejects.toThrow(/non-finite value at 3/);
  });
});
