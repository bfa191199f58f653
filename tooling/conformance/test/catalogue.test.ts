import type { AttentionBackend, AttentionOutputs } from '@tessera/core';
import { createCpuBackend } from '@tessera/cpu';
import * as patterns from '@tessera/patterns';
import { describe, expect, it } from 'vitest';
import {
  compareOutputs,
  conformanceCases,
  DTYPE_TOLERANCE,
  PATTERN_BUILDERS,
  PATTERNS,
  runCase,
} from '../src/index.js';
import { describeConformance } from '../src/vitest.js';

const cases = conformanceCases({ crossProduct: 'all' });
const byId = (id: string) => {
  const c = cases.find((x) => x.id === id);
  if (!c) throw new Error(`no case ${id}`);
  return c;
};

/** The mask builders issue 3 asks @tessera/patterns for. */
const ISSUE_3_BUILDERS = [
  'causal',
  'full',
  'slidingWindow',
  'dilated',
  'strided',
  'exponentialStride',
  'primeStride',
  'globalTokens',
  'random',
  'bigBird',
  'longformer',
  'prefixLM',
  'document',
  'blockDiagonal',
  'chunkedCausal',
  'union',
  'intersect',
  'difference',
  'not',
];
/** Exports of @tessera/patterns that are not mask builders. */
const NOT_BUILDERS = ['render', 'renderSvg', 'stats', 'maskLayout', 'toeplitzLayout'];

describe('the catalogue', () => {
  it('has at least 40 cases with unique ids', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    expect(new Set(cases.map((c) => c.id)).size).toBe(cases.length);
  });

  it('uses every mask builder of @tessera/patterns', () => {
    const exported = Object.entries(patterns)
      .filter(([name, v]) => typeof v === 'function' && !NOT_BUILDERS.includes(name))
      .map(([name]) => name);
    for (const name of [...ISSUE_3_BUILDERS, ...exported]) {
      expect(PATTERN_BUILDERS, `builder ${name}`).toContain(name);
      expect(
        cases.some((c) => c.tags.includes(`builder:${name}`)),
        `case using ${name}`,
      ).toBe(true);
    }
  });

  it('covers every heads × mod combination per pattern in the default ci profile', () => {
    const ci = conformanceCases();
    expect(ci.length).toBeGreaterThanOrEqual(40);
    const pairs = new Set<string>();
    for (const p of PATTERNS) {
      const mine = ci.filter((c) => c.id.startsWith(`pattern/${p.name}/`));
      expect(mine).toHaveLength(3);
      expect(new Set(mine.map((c) => c.id.split('/')[2])).size).toBe(3);
      expect(new Set(mine.map((c) => c.id.split('/')[3])).size).toBe(3);
      for (const c of mine) pairs.add(c.id.split('/').slice(2).join('/'));
    }
    expect(pairs.size).toBe(9);
    expect(ci.every((c) => cases.some((x) => x.id === c.id))).toBe(true);
  });

  it('crosses every pattern with MHA/GQA/MQA and no mod/ALiBi/softcap', () => {
    for (const p of PATTERNS) {
      for (const heads of ['mha', 'gqa', 'mqa']) {
        for (const mod of ['none', 'alibi', 'softcap']) {
          const c = byId(`pattern/${p.name}/${heads}/${mod}`);
          expect(c.tags).toContain(`heads:${heads}`);
          expect(c.tags).toContain(`mod:${mod}`);
        }
      }
    }
  });

  it('covers odd sizes, unequal lengths, masked rows, extremes, tensors, kernels, dtypes, layouts', () => {
    const summaries = cases.map((c) => c.summary).join('\n');
    for (const seq of [1, 7, 333, 1000])
      expect(summaries).toMatch(new RegExp(`S(${seq}×|\\d+×${seq} )`));
    for (const d of [16, 40, 64, 128]) expect(summaries).toMatch(new RegExp(` D${d}/`));
    for (const tag of [
      'seqQ≠seqKV',
      'masked-rows',
      'extreme',
      'tensor',
      'per-head',
      'dtype:f16',
      'dtype:bf16',
      'layout:bshd',
    ]) {
      expect(
        cases.some((c) => c.tags.includes(tag)),
        tag,
      ).toBe(true);
    }
    for (const map of ['elu+1', 'relu', 'favor+', 'trig-rf']) {
      expect(
        cases.some((c) => c.tags.includes(`linear:${map}`)),
        map,
      ).toBe(true);
    }
  });

  it('states a tolerance per dtype', () => {
    expect(DTYPE_TOLERANCE).toEqual({
      f32: { out: 1e-4, lse: 1e-4 },
      f16: { out: 2e-3, lse: 2e-3 },
      bf16: { out: 1e-2, lse: 1e-2 },
    });
    expect(byId('pattern/causal/mha/none').tolerance).toEqual(DTYPE_TOLERANCE.f32);
    expect(byId('dtype/f16/causal-gqa').tolerance).toEqual(DTYPE_TOLERANCE.f16);
    expect(byId('dtype/bf16/causal-gqa').tolerance).toEqual(DTYPE_TOLERANCE.bf16);
  });

  it('builds seeded, deterministic, non-trivial inputs on demand', () => {
    const c = byId('pattern/bigbird/gqa/alibi');
    expect(Object.keys(c).sort()).toEqual([
      'build',
      'dtype',
      'gradientTolerance',
      'id',
      'summary',
      'tags',
      'tolerance',
      'work',
    ]);
    const a = c.build();
    const b = c.build();
    expect(a.spec.hash).toBe(b.spec.hash);
    expect(Array.from(a.inputs.q)).toEqual(Array.from(b.inputs.q));
    expect(a.inputs.q.every(Number.isFinite)).toBe(true);
    expect(a.inputs.q.some((x) => x !== 0)).toBe(true);
    const other = byId('pattern/bigbird/gqa/none').build();
    expect(Array.from(other.inputs.v.subarray(0, 8))).not.toEqual(
      Array.from(a.inputs.v.subarray(0, 8)),
    );
  });

  it('profiles and maxWork choose sizes', () => {
    const full = conformanceCases({ profile: 'full' });
    expect(full.length).toBeGreaterThan(cases.length);
    expect(full.filter((c) => c.id.startsWith('pattern/'))).toHaveLength(PATTERNS.length * 9);
    expect(Math.max(...full.map((c) => c.work))).toBeGreaterThan(
      Math.max(...cases.map((c) => c.work)),
    );
    const small = conformanceCases({ maxWork: 1e7 });
    expect(small.length).toBeGreaterThan(40);
    expect(small.every((c) => c.work <= 1e7)).toBe(true);
    expect(
      conformanceCases({ filter: (c) => c.tags.includes('linear') }).every((c) =>
        c.id.includes('linear'),
      ),
    ).toBe(true);
    // biome-ignore lint/suspicious/noExplicitAny: deliberately wrong profile
    expect(() => conformanceCases({ profile: 'huge' as any })).toThrow(
      /profile must be 'ci' or 'full'/,
    );
  });
});

/** A cpu backend whose outputs are altered after the run. */
async function faulty(alter: (o: AttentionOutputs) => AttentionOutputs): Promise<AttentionBackend> {
  const cpu = await createCpuBackend();
  return { ...cpu, name: 'faulty', run: async (s, i, o) => alter(await cpu.run(s, i, o)) };
}

describe('runCase and compareOutputs', async () => {
  const cpu = await createCpuBackend();
  const masked = byId('pattern/not/mha/none');

  it('passes an exact match', async () => {
    const r = await runCase(cpu, masked, cpu);
    expect(r.pass).toBe(true);
    expect(r.relErr).toBe(0);
    expect(r.message).toBe('');
  });

  it('fails outputs off by more than the tolerance, and only then', async () => {
    const scale = (f: number) => (o: AttentionOutputs) => ({
      out: o.out.map((x) => x * f),
      lse: o.lse,
    });
    const off = await runCase(await faulty(scale(1 + 1e-3)), masked, cpu);
    expect(off.pass).toBe(false);
    expect(off.message).toMatch(/out relative error 1\.00e-3 > 0\.0001/);
    expect((await runCase(await faulty(scale(1 + 1e-5)), masked, cpu)).pass).toBe(true);
    const bf16 = byId('dtype/bf16/causal-gqa');
    expect((await runCase(await faulty(scale(1 + 1e-3)), bf16, cpu)).pass).toBe(true);
  });

  it('fails a row that should be fully masked, NaN, a wrong lse and a wrong length', async () => {
    const unmask = await runCase(
      await faulty((o) => ({ out: o.out, lse: o.lse.map((x) => (x === -Infinity ? 0 : x)) })),
      masked,
      cpu,
    );
    expect(unmask.pass).toBe(false);
    expect(unmask.maskedRowMismatches).toBeGreaterThan(0);
    const nan = await runCase(
      await faulty((o) => ({ out: o.out.map((x, i) => (i === 5 ? Number.NaN : x)), lse: o.lse })),
      masked,
      cpu,
    );
    expect(nan.nonFinite).toBe(1);
    expect(nan.pass).toBe(false);
    const lse = await runCase(
      await faulty((o) => ({ out: o.out, lse: o.lse.map((x) => x + 1e-3) })),
      masked,
      cpu,
    );
    expect(lse.message).toMatch(/lse error/);
    const short = await runCase(
      await faulty((o) => ({ out: o.out.subarray(1), lse: o.lse })),
      masked,
      cpu,
    );
    expect(short.shapeMismatch).toBe(true);
    expect(short.pass).toBe(false);
  });

  it('compares against all-zero references absolutely', () => {
    const tol = { out: 1e-4, lse: 1e-4 };
    const ref = { out: new Float32Array(4), lse: Float32Array.of(-Infinity) };
    expect(
      compareOutputs({ out: new Float32Array(4), lse: Float32Array.of(-Infinity) }, ref, tol).pass,
    ).toBe(true);
    expect(
      compareOutputs(
        { out: Float32Array.of(0, 0.1, 0, 0), lse: Float32Array.of(-Infinity) },
        ref,
        tol,
      ).pass,
    ).toBe(false);
  });

  it('describeConformance rejects skip entries that match no case', () => {
    expect(() =>
      describeConformance('x', () => cpu, { skip: { 'no-such-case': 'stale' } }),
    ).toThrow(/skip entry 'no-such-case' matches no case/);
  });
});
