// Gradient checking for the backward tests: an exact forward in f64 (dense, every (q, kv) pair;
// score and mask expressions through dense.ts's interpreter, linear kernels through its
// unstabilised feature maps), the loss L = Σ dOut ∘ out, and central finite differences of L in
// f64 with respect to q, k, v and every captured f32 tensor (perturbed in an f64 copy, so the
// step is not rounded to f32).
import {
  type AttentionInputs,
  type AttentionSpec,
  blockLayout,
  elementIndex,
  type RunOptions,
  tensorSizes,
} from '@tessera/core';
import { expect } from 'vitest';
import { backwardCpu } from '../src/backward/index.js';
import type { Gradients64 } from '../src/prepared.js';
import { type Env, featureMap, interpret, toBf16, toF16 } from './dense.js';
import { seeded } from './util.js';

export interface Point {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  /** By slot; f32 tensors as f64 copies, i32 tensors as they are. */
  tensors: (Float64Array | Int32Array)[];
}

/** q, k, v rounded to the spec's dtype (as the forward sees them) and the tensors, in f64. */
export function pointOf(spec: AttentionSpec, inputs: AttentionInputs): Point {
  const round = spec.dtype === 'f16' ? toF16 : spec.dtype === 'bf16' ? toBf16 : (x: number) => x;
  return {
    q: Float64Array.from(inputs.q, round),
    k: Float64Array.from(inputs.k, round),
    v: Float64Array.from(inputs.v, round),
    tensors: spec.tensors.map((t) =>
      t.dtype === 'f32' ? Float64Array.from(t.data) : (t.data as Int32Array),
    ),
  };
}

/** Exact attention in f64: out (spec layout) and lse per (b, h, q). */
export function dense64(spec: AttentionSpec, x: Point): { out: Float64Array; lse: Float64Array } {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D } = spec;
  const DV = spec.headDimV;
  const L = spec.layout;
  const out = new Float64Array(B * H * SQ * DV);
  const lse = new Float64Array(B * H * SQ);
  const at = (t: Float64Array, heads: number, seq: number, dim: number) => {
    return (b: number, h: number, s: number) =>
      Array.from({ length: dim }, (_, d) => t[elementIndex(L, heads, seq, dim, b, h, s, d)]);
  };
  const qRow = at(x.q, H, SQ, D);
  const kRow = at(x.k, HK, SK, D);
  const vRow = at(x.v, HK, SK, DV);
  const mask = spec.mask ? interpret(spec.mask.expr, x.tensors) : null;
  const mod = spec.scoreMod ? interpret(spec.scoreMod.expr, x.tensors) : null;
  const phi = spec.kernel.type === 'linear' ? featureMap(spec) : null;
  const root = Math.sqrt(Math.abs(spec.scale));
  const env: Env = { b: 0, h: 0, q: 0, kv: 0, score: 0 };
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor((h * HK) / H);
      for (let i = 0; i < SQ; i++) {
        const qi = qRow(b, h, i);
        const weights: number[] = [];
        const values: number[][] = [];
        let shift = 0;
        if (phi) {
          const fx = phi(qi.map((u) => Math.sign(spec.scale) * root * u));
          for (let j = 0; j < SK && (spec.mask === null || j <= i); j++) {
            const fy = phi(kRow(b, hk, j).map((u) => root * u));
            weights.push(fx.reduce((s, u, f) => s + u * fy[f], 0));
            values.push(vRow(b, hk, j));
          }
        } else {
          const scores: number[] = [];
          for (let j = 0; j < SK; j++) {
            Object.assign(env, { b, h, q: i, kv: j, score: 0 });
            if (mask && !mask(env)) continue;
            const kj = kRow(b, hk, j);
            env.score = spec.scale * qi.reduce((s, u, d) => s + u * kj[d], 0);
            const s = mod ? (mod(env) as number) : env.score;
            if (s === Number.NEGATIVE_INFINITY) continue;
            scores.push(s);
            values.push(vRow(b, hk, j));
          }
          shift = Math.max(...scores);
          for (const s of scores) weights.push(Math.exp(s - shift));
        }
        const den = weights.reduce((s, w) => s + w, 0);
        const r = (b * H + h) * SQ + i;
        if (!(den > 0)) {
          lse[r] = Number.NEGATIVE_INFINITY;
          continue;
        }
        lse[r] = shift + Math.log(den);
        for (let d = 0; d < DV; d++) {
          const num = weights.reduce((s, w, n) => s + w * values[n][d], 0);
          out[elementIndex(L, H, SQ, DV, b, h, i, d)] = num / den;
        }
      }
    }
  }
  return { out, lse };
}

/** Seeded dOut in [-1, 1), never zero. */
export function dOutFor(spec: AttentionSpec, seed: number): Float64Array {
  return Float64Array.from(seeded(tensorSizes(spec).out, seed, 9));
}

const loss = (spec: AttentionSpec, x: Point, dOut: Float64Array): number => {
  const { out } = dense64(spec, x);
  let s = 0;
  for (let i = 0; i < out.length; i++) s += dOut[i] * out[i];
  return s;
};

/** Central differences (L(x + h) − L(x − h)) / 2h of every element of q, k, v and f32 tensors. */
export function fdGradients(
  spec: AttentionSpec,
  x: Point,
  dOut: Float64Array,
  step: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array; grads: (Float64Array | null)[] } {
  const diff = (t: Float64Array): Float64Array => {
    const g = new Float64Array(t.length);
    for (let i = 0; i < t.length; i++) {
      const keep = t[i];
      t[i] = keep + step;
      const up = loss(spec, x, dOut);
      t[i] = keep - step;
      const down = loss(spec, x, dOut);
      t[i] = keep;
      g[i] = (up - down) / (2 * step);
    }
    return g;
  };
  return {
    dq: diff(x.q),
    dk: diff(x.k),
    dv: diff(x.v),
    grads: x.tensors.map((t) => (t instanceof Float64Array ? diff(t) : null)),
  };
}

/**
 * The backward under test, fed the exact forward's f64 out and lse (so that f32 rounding of the
 * forward's outputs does not limit the comparison).
 */
export function exactBackward(
  spec: AttentionSpec,
  inputs: AttentionInputs,
  dOut: Float64Array,
  options: RunOptions = {},
): Gradients64 {
  const { out, lse } = dense64(spec, pointOf(spec, inputs));
  const layout = (s: AttentionSpec) =>
    blockLayout(s, { blockQ: options.blockQ, blockKV: options.blockKV });
  return backwardCpu(spec, { ...inputs, out, lse, dOut }, options.strategy ?? 'tiled', layout);
}

/** ‖got − want‖ / ‖want‖ ≤ tol, with ‖want‖ > 0 (a zero gradient would make the check vacuous). */
export function expectGrad(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
): void {
  expect(got.length, `${name} length`).toBe(want.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(got[i])) expect.fail(`${name}[${i}] is NaN`);
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  if (!(den > 0))
    expect.fail(`${name}: the reference gradient is zero, the check would be vacuous`);
  const e = Math.sqrt(num / den);
  if (!(e <= tol)) expect.fail(`${name}: relative error ${e.toExponential(3)} > ${tol}`);
}

/** FD step and tolerance of the smooth cases: truncation ~h²·f''' ≈ 1e-8, roundoff ~1e-16/h. */
export const FD_STEP = 1e-4;
export const FD_TOL = 1e-6;

/** Checks dq, dk, dv and every gradient-receiving tensor slot of `got` against `want`. */
export function expectGradients(
  got: Gradients64,
  want: ReturnType<typeof fdGradients>,
  tol: number,
  slots: readonly number[],
): void {
  expectGrad('dq', got.dq, want.dq, tol);
  expectGrad('dk', got.dk, want.dk, tol);
  expectGrad('dv', got.dv, want.dv, tol);
  got.grads.forEach((g, slot) => {
    if (slots.includes(slot)) {
      expect(g, `grads[${slot}]`).not.toBeNull();
      expectGrad(`grads[${slot}]`, g as Float64Array, want.grads[slot] as Float64Array, tol);
    } else {
      expect(g, `grads[${slot}]`).toBeNull();
    }
  });
}
