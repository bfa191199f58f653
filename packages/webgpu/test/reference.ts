// An independent dense attention in f64: every score of every row, an ordinary softmax, then the
// weighted sum. Expressions are evaluated with core's JS closures (the reference renderer).
import {
  type AttentionOutputs,
  type AttentionSpec,
  compileJs,
  elementIndex,
  kvHeadOf,
  roundToDtype,
} from '@tessera/core';

export function denseReference(
  spec: AttentionSpec,
  inputs: { q: Float32Array; k: Float32Array; v: Float32Array },
): AttentionOutputs {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  const q = roundToDtype(inputs.q, spec.dtype);
  const k = roundToDtype(inputs.k, spec.dtype);
  const v = roundToDtype(inputs.v, spec.dtype);
  const tensors = spec.tensors.map((t) => t.data);
  const mask = spec.mask ? compileJs(spec.mask.expr, tensors) : null;
  const mod = spec.scoreMod ? compileJs(spec.scoreMod.expr, tensors) : null;
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  const s = new Float64Array(SK);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = kvHeadOf(spec, h);
      for (let i = 0; i < SQ; i++) {
        let mx = -Infinity;
        for (let j = 0; j < SK; j++) {
          if (mask && !mask(b, h, i, j, 0)) {
            s[j] = -Infinity;
            continue;
          }
          let dot = 0;
          for (let d = 0; d < D; d++) {
            dot +=
              (q[elementIndex(spec.layout, H, SQ, D, b, h, i, d)] as number) *
              (k[elementIndex(spec.layout, HK, SK, D, b, hk, j, d)] as number);
          }
          let x = dot * spec.scale;
          if (mod) x = mod(b, h, i, j, x) as number;
          s[j] = x;
          if (x > mx) mx = x;
        }
        let sum = 0;
        if (mx > -Infinity) for (let j = 0; j < SK; j++) sum += Math.exp((s[j] as number) - mx);
        lse[(b * H + h) * SQ + i] = sum > 0 ? mx + Math.log(sum) : -Infinity;
        for (let c = 0; c < DV; c++) {
          let acc = 0;
          if (sum > 0) {
            for (let j = 0; j < SK; j++) {
              const p = Math.exp((s[j] as number) - mx) / sum;
              if (p > 0)
                acc += p * (v[elementIndex(spec.layout, HK, SK, DV, b, hk, j, c)] as number);
            }
          }
          out[elementIndex(spec.layout, H, SQ, DV, b, h, i, c)] = acc;
        }
      }
    }
  }
  return { out, lse };
}

/** Seeded uniform values in [-1, 1) (mulberry32). */
export function randomArray(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export function randomInputs(spec: AttentionSpec, seed: number) {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  return {
    q: randomArray(B * H * SQ * D, seed),
    k: randomArray(B * HK * SK * D, seed + 1),
    v: randomArray(B * HK * SK * DV, seed + 2),
  };
}

/** Largest |a - b| / (tol_abs + |b|) style check: returns the worst relative error (scale-aware). */
export function maxRelError(got: Float32Array, want: Float32Array): number {
  let scale = 0;
  for (const x of want) if (Number.isFinite(x)) scale = Math.max(scale, Math.abs(x));
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const a = got[i] as number;
    const b = want[i] as number;
    if (!Number.isFinite(b)) {
      if (a !== b) return Number.POSITIVE_INFINITY;
      continue;
    }
    if (!Number.isFinite(a)) return Number.POSITIVE_INFINITY;
    worst = Math.max(worst, Math.abs(a - b) / Math.max(scale, 1e-30));
  }
  return worst;
}
