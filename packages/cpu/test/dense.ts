// An independent dense attention, written for the tests from the documented semantics: a tiny
// interpreter (a tree of closures) for mask and score expressions (not core's compileJs), every (q, kv)
// pair evaluated and the scores of a row materialised, f64 throughout. Slow and obvious on purpose.
import type { AttentionInputs, AttentionOutputs, AttentionSpec, ExprNode } from '@tessera/core';
import { randomFeatureMatrix } from '@tessera/core/backend';

// ---- expressions -------------------------------------------------------------------------------

const i32 = (x: number): number => x | 0;

function mix(x: number): number {
  let h = x >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export interface Env {
  b: number;
  h: number;
  q: number;
  kv: number;
  score: number;
}

type Fn = (env: Env) => number | boolean;

/** Builds a tree of closures, one per node, from the documented semantics (no code generation). */
export function interpret(n: ExprNode, tensors: readonly ArrayLike<number>[]): Fn {
  const sub = (x: ExprNode) => interpret(x, tensors) as (env: Env) => number;
  switch (n.op) {
    case 'const': {
      const value = n.type === 'bool' ? n.value !== 0 : n.value;
      return () => value;
    }
    case 'var': {
      const name = n.name;
      return (env) => env[name];
    }
    case 'cast': {
      const a = sub(n.a);
      return n.type === 'i32' ? (env) => i32(Math.trunc(a(env))) : a;
    }
    case 'select': {
      const [c, a, b] = [sub(n.cond), sub(n.a), sub(n.b)];
      return (env) => (c(env) ? a(env) : b(env));
    }
    case 'load': {
      const t = tensors[n.tensor];
      const index = sub(n.index);
      return (env) => {
        const i = index(env);
        return i >= 0 && i < t.length ? t[i] : 0;
      };
    }
    case 'hash': {
      const args = n.args.map(sub);
      return (env) => {
        let h = 0;
        for (const a of args) h = mix(h ^ mix((a(env) + 0x9e3779b9) >>> 0));
        return Math.floor(h / 256) / 16777216;
      };
    }
    case 'unary': {
      const a = sub(n.a);
      const int = n.type === 'i32';
      const f: Record<string, (x: number) => number | boolean> = {
        not: (x) => !x,
        neg: (x) => (int ? i32(-x) : -x),
        abs: (x) => (int ? i32(Math.abs(x)) : Math.abs(x)),
        exp: Math.exp,
        exp2: (x) => 2 ** x,
        log: Math.log,
        tanh: Math.tanh,
        sqrt: Math.sqrt,
        floor: Math.floor,
      };
      const fn = f[n.fn];
      if (!fn) throw new Error(`unknown unary ${n.fn}`);
      return (env) => fn(a(env));
    }
    case 'binary': {
      const [a, b] = [sub(n.a), sub(n.b)];
      if (n.fn === 'and') return (env) => Boolean(a(env)) && Boolean(b(env));
      if (n.fn === 'or') return (env) => Boolean(a(env)) || Boolean(b(env));
      const int = n.type === 'i32';
      const f: Record<string, (x: number, y: number) => number | boolean> = {
        add: (x, y) => (int ? i32(x + y) : x + y),
        sub: (x, y) => (int ? i32(x - y) : x - y),
        mul: (x, y) => (int ? Number(BigInt.asIntN(32, BigInt(x) * BigInt(y))) : x * y),
        div: (x, y) => (int ? (y === 0 ? 0 : i32(Math.trunc(x / y))) : x / y),
        mod: (x, y) => (int ? (y === 0 ? 0 : i32(x % y)) : x % y),
        min: Math.min,
        max: Math.max,
        lt: (x, y) => x < y,
        le: (x, y) => x <= y,
        gt: (x, y) => x > y,
        ge: (x, y) => x >= y,
        eq: (x, y) => x === y,
        ne: (x, y) => x !== y,
      };
      const fn = f[n.fn];
      if (!fn) throw new Error(`unknown binary ${n.fn}`);
      return (env) => fn(a(env), b(env));
    }
  }
}

// ---- dtype rounding (round half to even on the target grid) -------------------------------------

function roundToGrid(x: number, spacing: number): number {
  const t = x / spacing;
  const f = Math.floor(t);
  const frac = t - f;
  const n = frac > 0.5 ? f + 1 : frac < 0.5 ? f : f % 2 === 0 ? f : f + 1;
  return n * spacing;
}

/** floor(log2 |x|), exactly (Math.log2 may be off by one next to powers of two). */
function exponent(x: number): number {
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return e;
}

/** f16: 10 fraction bits, exponents -14..15, subnormal spacing 2^-24, overflow to ±Infinity. */
export function toF16(x: number): number {
  if (x === 0) return x;
  const e = Math.max(exponent(x), -14);
  const r = roundToGrid(x, 2 ** (e - 10));
  return Math.abs(r) >= 65520 ? Math.sign(x) * Number.POSITIVE_INFINITY : r;
}

/** bf16: f32's exponent range with 7 fraction bits. */
export function toBf16(x: number): number {
  if (x === 0) return x;
  const e = exponent(x);
  return Math.fround(roundToGrid(x, 2 ** (Math.max(e, -126) - 7)));
}

function rounded(t: Float32Array, dtype: AttentionSpec['dtype']): Float64Array {
  const f = dtype === 'f16' ? toF16 : dtype === 'bf16' ? toBf16 : (x: number) => x;
  return Float64Array.from(t, f);
}

// ---- attention -----------------------------------------------------------------------------------

function index(
  layout: AttentionSpec['layout'],
  heads: number,
  seq: number,
  dim: number,
  b: number,
  h: number,
  s: number,
  d: number,
): number {
  return layout === 'bhsd'
    ? ((b * heads + h) * seq + s) * dim + d
    : ((b * seq + s) * heads + h) * dim + d;
}

/** Feature map φ of a linear kernel, unstabilised, straight from the formulas in core's features.ts. */
export function featureMap(spec: AttentionSpec): (x: number[]) => number[] {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('not linear');
  const D = spec.headDim;
  if (k.featureMap === 'elu+1') return (x) => x.map((v) => (v > 0 ? v + 1 : Math.exp(v)));
  if (k.featureMap === 'relu') return (x) => x.map((v) => Math.max(v, 0));
  const w = randomFeatureMatrix(k, D);
  const m = k.features;
  const proj = (x: number[]) =>
    Array.from({ length: m }, (_, r) => x.reduce((s, v, c) => s + w[r * D + c] * v, 0));
  const sq = (x: number[]) => x.reduce((s, v) => s + v * v, 0);
  if (k.featureMap === 'favor+')
    return (x) => proj(x).map((p) => Math.exp(p - sq(x) / 2) / Math.sqrt(m));
  return (x) => {
    const p = proj(x);
    const a = Math.exp(sq(x) / 2) / Math.sqrt(m);
    return [...p.map((v) => a * Math.sin(v)), ...p.map((v) => a * Math.cos(v))];
  };
}

/** Dense reference attention: out and lse of every (b, h, q) by direct summation. */
export function denseAttention(spec: AttentionSpec, inputs: AttentionInputs): AttentionOutputs {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D } = spec;
  const DV = spec.headDimV;
  const q = rounded(inputs.q, spec.dtype);
  const k = rounded(inputs.k, spec.dtype);
  const v = rounded(inputs.v, spec.dtype);
  const tensors = spec.tensors.map((t) => t.data);
  const mask = spec.mask ? interpret(spec.mask.expr, tensors) : null;
  const mod = spec.scoreMod ? interpret(spec.scoreMod.expr, tensors) : null;
  const env: Env = { b: 0, h: 0, q: 0, kv: 0, score: 0 };
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  // rows[b][h][s]: one plain array per row, extracted once.
  const rows = (t: Float64Array, heads: number, seq: number, dim: number) =>
    Array.from({ length: B }, (_, b) =>
      Array.from({ length: heads }, (_, h) =>
        Array.from({ length: seq }, (_, s) =>
          Array.from({ length: dim }, (_, d) => t[index(spec.layout, heads, seq, dim, b, h, s, d)]),
        ),
      ),
    );
  const qRows = rows(q, H, SQ, D);
  const kRows = rows(k, HK, SK, D);
  const vRows = rows(v, HK, SK, DV);
  const linear = spec.kernel.type === 'linear';
  const phi = linear ? featureMap(spec) : null;
  const sqrtScale = Math.sqrt(Math.abs(spec.scale));
  const keyFeatures = phi
    ? kRows.map((hs) => hs.map((js) => js.map((y) => phi(y.map((x) => sqrtScale * x)))))
    : [];

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor((h * HK) / H);
      for (let i = 0; i < SQ; i++) {
        const qi = qRows[b][h][i];
        const weights: number[] = [];
        const values: number[][] = [];
        if (phi) {
          const fx = phi(qi.map((x) => Math.sign(spec.scale) * sqrtScale * x));
          for (let j = 0; j < SK; j++) {
            if (spec.mask && !(j <= i)) continue;
            const fy = keyFeatures[b][hk][j];
            weights.push(fx.reduce((s, x, f) => s + x * fy[f], 0));
            values.push(vRows[b][hk][j]);
          }
          const den = weights.reduce((s, w) => s + w, 0);
          if (!(den > 0)) {
            lse[(b * H + h) * SQ + i] = Number.NEGATIVE_INFINITY;
            continue;
          }
          for (let d = 0; d < DV; d++) {
            const num = weights.reduce((s, w, n) => s + w * values[n][d], 0);
            out[index(spec.layout, H, SQ, DV, b, h, i, d)] = num / den;
          }
          lse[(b * H + h) * SQ + i] = Math.log(den);
          continue;
        }
        const scores: number[] = [];
        for (let j = 0; j < SK; j++) {
          env.b = b;
          env.h = h;
          env.q = i;
          env.kv = j;
          env.score = 0;
          if (mask && !mask(env)) continue;
          const kj = kRows[b][hk][j];
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qi[d] * kj[d];
          let s = spec.scale * dot;
          if (mod) {
            env.score = s;
            s = mod(env) as number;
          }
          if (s === Number.NEGATIVE_INFINITY) continue;
          scores.push(s);
          values.push(vRows[b][hk][j]);
        }
        if (scores.length === 0) {
          lse[(b * H + h) * SQ + i] = Number.NEGATIVE_INFINITY;
          continue;
        }
        const max = scores.reduce((a, x) => Math.max(a, x), Number.NEGATIVE_INFINITY);
        const w = scores.map((s) => Math.exp(s - max));
        const sum = w.reduce((a, x) => a + x, 0);
        for (let d = 0; d < DV; d++) {
          out[index(spec.layout, H, SQ, DV, b, h, i, d)] =
            w.reduce((a, x, n) => a + x * values[n][d], 0) / sum;
        }
        lse[(b * H + h) * SQ + i] = max + Math.log(sum);
      }
    }
  }
  return { out, lse };
}
