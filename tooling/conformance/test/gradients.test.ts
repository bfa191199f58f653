import { type AttentionGradients, roundToDtype } from '@tessera/core';
import { gradientSlots, scoreModGradient } from '@tessera/core/backend';
import { createCpuBackend } from '@tessera/cpu';
import { describe, expect, it } from 'vitest';
import {
  compareGradients,
  conformanceCases,
  GRADIENT_TOLERANCE,
  gradientCases,
  seededValues,
  seedOf,
} from '../src/index.js';
import { describeGradientConformance } from '../src/vitest.js';

const all = gradientCases({ crossProduct: 'all' });
const byId = (id: string) => {
  const c = all.find((x) => x.id === id);
  if (!c) throw new Error(`no gradient case ${id}`);
  return c;
};

describe('the gradient catalogue', () => {
  it('is every forward case, in every profile', () => {
    for (const options of [{}, { crossProduct: 'all' as const }, { profile: 'full' as const }]) {
      expect(gradientCases(options).map((c) => c.id)).toEqual(
        conformanceCases(options).map((c) => c.id),
      );
    }
    const ci = gradientCases();
    expect(ci.length).toBeGreaterThanOrEqual(130);
    for (const tag of [
      'masked-rows',
      'linear',
      'dtype:f16',
      'dtype:bf16',
      'heads:gqa',
      'layout:bshd',
    ]) {
      expect(
        ci.some((c) => c.tags.includes(tag)),
        tag,
      ).toBe(true);
    }
  });

  it("tags 'score-tensor' exactly the cases whose score mod has an f32 tensor gradient", () => {
    for (const c of all) {
      const { spec } = c.forward.build();
      const slots = spec.scoreMod
        ? gradientSlots(
            scoreModGradient(
              spec.scoreMod.expr,
              spec.tensors.map((t) => t.dtype),
            ),
          )
        : [];
      expect(slots.length > 0, c.id).toBe(c.tags.includes('score-tensor'));
      for (const slot of slots) expect(spec.tensors[slot]?.dtype, c.id).toBe('f32');
    }
  });

  it('has learnable-bias cases: ALiBi slopes, a relative-position table, per-head temperatures', () => {
    for (const id of [
      'pattern/causal/gqa/alibi',
      'tensor/relative-bias',
      'tensor/relative-bias-per-head',
      'tensor/per-head-temperature',
      'masked/rows-alibi',
    ]) {
      expect(byId(id).tags, id).toContain('score-tensor');
    }
  });

  it('has fully masked rows, with and without a captured-tensor gradient', async () => {
    const masked = all.filter((c) => c.tags.includes('masked-rows'));
    expect(masked.some((c) => c.tags.includes('score-tensor'))).toBe(true);
    expect(masked.some((c) => !c.tags.includes('score-tensor'))).toBe(true);
    for (const id of ['masked/rows-alibi', 'masked/everything', 'masked/score-minus-infinity']) {
      const { inputs } = await byId(id).build();
      const empty = inputs.lse.filter((x) => x === Number.NEGATIVE_INFINITY).length;
      expect(empty, id).toBeGreaterThan(0);
      expect(empty, id).toBeLessThanOrEqual(inputs.lse.length);
    }
    const { inputs } = await byId('masked/rows-alibi').build();
    expect(inputs.lse.some(Number.isFinite)).toBe(true);
  });

  it("builds the cpu forward's out and lse and a seeded dOut in [-1, 1)", async () => {
    const c = byId('pattern/bigbird/gqa/alibi');
    const a = await c.build();
    const b = await c.build();
    const cpu = await createCpuBackend();
    const fwd = await cpu.run(a.spec, c.forward.build().inputs);
    expect(Array.from(a.inputs.out)).toEqual(Array.from(fwd.out));
    expect(Array.from(a.inputs.lse)).toEqual(Array.from(fwd.lse));
    expect(Array.from(a.inputs.q)).toEqual(Array.from(c.forward.build().inputs.q));
    expect(Array.from(a.inputs.dOut)).toEqual(Array.from(b.inputs.dOut));
    expect(a.inputs.dOut).toHaveLength(a.inputs.out.length);
    expect(a.inputs.dOut.every((x) => x >= -1 && x < 1)).toBe(true);
    expect(new Set(a.inputs.dOut).size).toBeGreaterThan(a.inputs.dOut.length / 2);
    const other = await byId('pattern/bigbird/gqa/none').build();
    expect(Array.from(other.inputs.dOut.subarray(0, 8))).not.toEqual(
      Array.from(a.inputs.dOut.subarray(0, 8)),
    );
  });

  it('rounds out and dOut of 16-bit cases to the dtype', async () => {
    for (const id of ['dtype/f16/causal-gqa', 'dtype/bf16/window-alibi']) {
      const { spec, inputs } = await byId(id).build();
      expect(Array.from(roundToDtype(inputs.out, spec.dtype))).toEqual(Array.from(inputs.out));
      expect(Array.from(roundToDtype(inputs.dOut, spec.dtype))).toEqual(Array.from(inputs.dOut));
      const raw = seededValues(inputs.dOut.length, seedOf(id), 3);
      expect(inputs.dOut.some((x, i) => x !== raw[i])).toBe(true);
    }
  });

  it('states a gradient tolerance per dtype, with per-case overrides', () => {
    expect(GRADIENT_TOLERANCE).toEqual({
      f32: { qkv: 2e-4, tensors: 1e-3 },
      f16: { qkv: 5e-3, tensors: 1e-2 },
      bf16: { qkv: 2e-2, tensors: 5e-2 },
    });
    expect(byId('pattern/causal/mha/none').tolerance).toEqual(GRADIENT_TOLERANCE.f32);
    expect(byId('dtype/f16/causal-gqa').tolerance).toEqual(GRADIENT_TOLERANCE.f16);
    expect(byId('dtype/bf16/causal-gqa').tolerance).toEqual(GRADIENT_TOLERANCE.bf16);
    expect(byId('extreme/scores-1e4').tolerance).toEqual({ qkv: 1e-2, tensors: 1e-2 });
    expect(byId('linear/trig-rf/causal/mha').tolerance.qkv).toBe(5e-3);
  });
});

/** Seeded gradients shaped like a case with two captured tensors, the second without gradient. */
function grads(): AttentionGradients {
  return {
    dq: seededValues(64, 1, 0),
    dk: seededValues(32, 1, 1),
    dv: seededValues(48, 1, 2),
    grads: [seededValues(6, 1, 3), null],
  };
}
const tol = GRADIENT_TOLERANCE.f32;
type Mutable = { -readonly [K in keyof AttentionGradients]: AttentionGradients[K] };
const alter = (f: (g: Mutable) => void): AttentionGradients => {
  const g = grads() as Mutable;
  f(g);
  return g;
};

describe('compareGradients', () => {
  it('passes an exact match, and errors within the tolerance', () => {
    const r = compareGradients(grads(), grads(), tol);
    expect(r.pass).toBe(true);
    expect(r.message).toBe('');
    expect(r.errors.map((e) => e.name)).toEqual(['dq', 'dk', 'dv', 'grads[0]']);
    expect(r.errors.every((e) => e.relErr === 0)).toBe(true);
    const close = alter((g) => {
      g.dk = g.dk.map((x) => x * (1 + 1e-5));
    });
    expect(compareGradients(close, grads(), tol).pass).toBe(true);
  });

  it('detects a perturbed dk and names it', () => {
    const r = compareGradients(
      alter((g) => {
        g.dk = g.dk.map((x) => x * (1 + 1e-3));
      }),
      grads(),
      tol,
    );
    expect(r.pass).toBe(false);
    expect(r.message).toMatch(/^dk relative error 1\.00e-3 > 0\.0002$/);
    expect(r.worst?.name).toBe('dk');
  });

  it('detects a perturbed captured-tensor gradient against the tensors bound', () => {
    const off = (f: number) =>
      alter((g) => {
        g.grads = [(g.grads[0] as Float32Array).map((x) => x * f), null];
      });
    expect(compareGradients(off(1 + 5e-4), grads(), tol).pass).toBe(true);
    const r = compareGradients(off(1 + 5e-3), grads(), tol);
    expect(r.message).toMatch(/^grads\[0\] relative error 5\.00e-3 > 0\.001$/);
  });

  it('fails a NaN or an Infinity', () => {
    const nan = compareGradients(
      alter((g) => {
        g.dv[3] = Number.NaN;
      }),
      grads(),
      tol,
    );
    expect(nan.pass).toBe(false);
    expect(nan.nonFinite).toBe(1);
    expect(nan.message).toMatch(/dv has 1 non-finite values/);
    const inf = compareGradients(
      alter((g) => {
        (g.grads[0] as Float32Array)[0] = Number.POSITIVE_INFINITY;
      }),
      grads(),
      tol,
    );
    expect(inf.message).toMatch(/grads\[0\] has 1 non-finite values/);
  });

  it('fails a null/non-null mismatch either way', () => {
    const missing = compareGradients(
      alter((g) => {
        g.grads = [null, null];
      }),
      grads(),
      tol,
    );
    expect(missing.pass).toBe(false);
    expect(missing.nullMismatches).toBe(1);
    expect(missing.message).toBe('grads[0] is null, expected a tensor');
    const extra = compareGradients(
      alter((g) => {
        g.grads = [g.grads[0], new Float32Array(3)];
      }),
      grads(),
      tol,
    );
    expect(extra.message).toBe('grads[1] is a tensor, expected null');
    const fewer = compareGradients(
      alter((g) => {
        g.grads = [g.grads[0]];
      }),
      grads(),
      tol,
    );
    expect(fewer.shapeMismatch).toBe(true);
    expect(fewer.message).toBe('grads has 1 slots, expected 2');
  });

  it('fails a wrong length', () => {
    const short = compareGradients(
      alter((g) => {
        g.dq = g.dq.subarray(1);
      }),
      grads(),
      tol,
    );
    expect(short.pass).toBe(false);
    expect(short.shapeMismatch).toBe(true);
    expect(short.message).toMatch(/^dq has 63 elements, expected 64/);
    const slot = compareGradients(
      alter((g) => {
        g.grads = [new Float32Array(7), null];
      }),
      grads(),
      tol,
    );
    expect(slot.message).toMatch(/grads\[0\] has 7 elements, expected 6/);
  });

  it('compares against all-zero references absolutely', () => {
    const zero = {
      dq: new Float32Array(4),
      dk: new Float32Array(4),
      dv: new Float32Array(4),
      grads: [],
    };
    expect(compareGradients(zero, zero, tol).pass).toBe(true);
    const r = compareGradients({ ...zero, dk: Float32Array.of(0, 1e-3, 0, 0) }, zero, tol);
    expect(r.message).toMatch(/^dk relative error 1\.00e-3/);
  });

  it('requires exactly zero dq rows where the forward masked the whole row', async () => {
    const { spec, inputs } = await byId('masked/rows-alibi').build();
    const n = inputs.q.length;
    const ref: AttentionGradients = {
      dq: seededValues(n, 2, 0),
      dk: seededValues(inputs.k.length, 2, 1),
      dv: seededValues(inputs.v.length, 2, 2),
      grads: [seededValues(spec.tensors[0]?.length ?? 0, 2, 3)],
    };
    // Zero the reference's masked rows (bshd or bhsd alike: find them through lse).
    const { headsQ: H, seqQ: S, headDim: D } = spec;
    const row = (b: number, h: number, s: number) =>
      spec.layout === 'bhsd' ? ((b * H + h) * S + s) * D : ((b * S + s) * H + h) * D;
    let firstMasked = -1;
    for (let i = 0; i < inputs.lse.length; i++) {
      if (inputs.lse[i] !== Number.NEGATIVE_INFINITY) continue;
      const at = row(Math.floor(i / (H * S)), Math.floor(i / S) % H, i % S);
      ref.dq.fill(0, at, at + D);
      if (firstMasked < 0) firstMasked = at;
    }
    expect(firstMasked).toBeGreaterThanOrEqual(0);
    const masked = { spec, lse: inputs.lse };
    expect(compareGradients(ref, ref, tol, masked).pass).toBe(true);
    const dq = ref.dq.slice();
    dq[firstMasked + 1] = 1e-30; // far inside the tolerance, but not zero
    const r = compareGradients({ ...ref, dq }, ref, tol, masked);
    expect(r.pass).toBe(false);
    expect(r.maskedRowNonZero).toBe(1);
    expect(r.message).toBe('dq has 1 non-zero values in fully masked rows');
  });

  it('describeGradientConformance rejects skip entries that match no case', () => {
    expect(() =>
      describeGradientConformance('x', () => createCpuBackend(), { skip: { 'no-such': 'stale' } }),
    ).toThrow(/describeGradientConformance\('x'\): skip entry 'no-such' matches no case/);
  });
});
