import { type AttentionOutputs, type AttentionSpec, groupSize, kvHeadOf } from '@tessera/core';
import { featureDim, linearInputScales, randomFeatureMatrix } from '@tessera/core/backend';
import { dot, specAccess } from './access.js';
import type { Prepared } from './prepared.js';

/**
 * A linear kernel's feature map, as documented in core's features.ts: writes the stabilised
 * features φ̃(x) = φ(x) · exp(−c) of row `off` of `src` (scaled by `mul`) into `out`, returns c.
 */
export type FeatureFn = (src: Float32Array, off: number, mul: number, out: Float64Array) => number;

export interface LinearKernel {
  readonly features: number;
  readonly query: number;
  readonly key: number;
  readonly map: FeatureFn;
  /** The m × D random feature matrix (row-major) of favor+ and trig-rf; null for elu+1, relu. */
  readonly weights: Float64Array | null;
}

/** The feature map of a linear spec, with its random matrix drawn once. */
export function linearKernel(spec: AttentionSpec): LinearKernel {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('linearKernel() needs a linear spec');
  const D = spec.headDim;
  const F = featureDim(spec);
  const { query, key } = linearInputScales(spec.scale);
  const x = new Float64Array(D);
  const load = (src: Float32Array, off: number, mul: number): number => {
    let sq = 0;
    for (let d = 0; d < D; d++) {
      x[d] = mul * src[off + d];
      sq += x[d] * x[d];
    }
    return sq;
  };
  let map: FeatureFn;
  let weights: Float64Array | null = null;
  switch (k.featureMap) {
    case 'elu+1':
      map = (src, off, mul, out) => {
        load(src, off, mul);
        for (let d = 0; d < D; d++) out[d] = x[d] > 0 ? x[d] + 1 : Math.exp(x[d]);
        return 0;
      };
      break;
    case 'relu':
      map = (src, off, mul, out) => {
        load(src, off, mul);
        for (let d = 0; d < D; d++) out[d] = Math.max(x[d], 0);
        return 0;
      };
      break;
    case 'favor+':
    case 'trig-rf': {
      const m = k.features;
      const w = Float64Array.from(randomFeatureMatrix(k, D));
      weights = w;
      const norm = 1 / Math.sqrt(m);
      const proj = new Float64Array(m);
      const project = () => {
        let max = Number.NEGATIVE_INFINITY;
        for (let r = 0; r < m; r++) {
          const p = dot(w, r * D, x, 0, D);
          proj[r] = p;
          if (p > max) max = p;
        }
        return max;
      };
      map =
        k.featureMap === 'favor+'
          ? (src, off, mul, out) => {
              const sq = load(src, off, mul);
              const max = project();
              for (let r = 0; r < m; r++) out[r] = Math.exp(proj[r] - max) * norm;
              return max - sq / 2;
            }
          : (src, off, mul, out) => {
              const sq = load(src, off, mul);
              project();
              for (let r = 0; r < m; r++) {
                out[r] = Math.sin(proj[r]) * norm;
                out[m + r] = Math.cos(proj[r]) * norm;
              }
              return sq / 2;
            };
      break;
    }
  }
  return { features: F, query, key, map, weights };
}

/** Writes row `qi` of (b, h): out = φ̃ᵀS / φ̃·z, lse = ln(φ̃·z) + cq + ck, or 0 / -Infinity. */
function finishRow(
  spec: AttentionSpec,
  res: AttentionOutputs,
  outOff: number,
  lseIdx: number,
  phi: Float64Array,
  cq: number,
  state: Float64Array,
  z: Float64Array,
  ck: number,
): void {
  const F = phi.length;
  const DV = spec.headDimV;
  let den = 0;
  for (let f = 0; f < F; f++) den += phi[f] * z[f];
  if (!(den > 0)) {
    res.lse[lseIdx] = Number.NEGATIVE_INFINITY;
    return; // out stays 0: no attention mass
  }
  const inv = 1 / den;
  for (let d = 0; d < DV; d++) {
    let num = 0;
    for (let f = 0; f < F; f++) num += phi[f] * state[f * DV + d];
    res.out[outOff + d] = num * inv;
  }
  res.lse[lseIdx] = Math.log(den) + cq + ck;
}

/**
 * Linear attention in O(N · F · DV): per (batch, KV head) the running sums S = Σ φ̃(k_j) v_jᵀ
 * and z = Σ φ̃(k_j), shared by the query heads of the group. Non-causal: every key first, then
 * every row. Causal: keys are added as the query index passes them (prefix sums), no N×N.
 */
export function linearPrefix(p: Prepared, kernel: LinearKernel): AttentionOutputs {
  const { spec } = p;
  const { q: qa, k: ka, v: va } = p.inputs;
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDimV: DV } = spec;
  const causal = spec.mask !== null;
  const G = groupSize(spec);
  const F = kernel.features;
  const acc = specAccess(spec);
  const res = { out: new Float32Array(B * H * SQ * DV), lse: new Float32Array(B * H * SQ) };
  const state = new Float64Array(F * DV);
  const z = new Float64Array(F);
  const phi = new Float64Array(F);

  for (let b = 0; b < B; b++) {
    for (let kvh = 0; kvh < HK; kvh++) {
      state.fill(0);
      z.fill(0);
      let ck = Number.NEGATIVE_INFINITY;
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const addKey = (j: number): void => {
        const c = kernel.map(ka, kBase + j * acc.k.stride, kernel.key, phi);
        let mul = 1;
        if (c > ck) {
          if (ck !== Number.NEGATIVE_INFINITY) {
            const shrink = Math.exp(ck - c);
            for (let i = 0; i < state.length; i++) state[i] *= shrink;
            for (let f = 0; f < F; f++) z[f] *= shrink;
          }
          ck = c;
        } else {
          mul = Math.exp(c - ck);
        }
        const vOff = vBase + j * acc.v.stride;
        for (let f = 0; f < F; f++) {
          const w = phi[f] * mul;
          z[f] += w;
          for (let d = 0; d < DV; d++) state[f * DV + d] += w * va[vOff + d];
        }
      };
      const row = (h: number, qi: number): void => {
        const cq = kernel.map(qa, acc.q.base(b, h) + qi * acc.q.stride, kernel.query, phi);
        const outOff = acc.out.base(b, h) + qi * acc.out.stride;
        finishRow(spec, res, outOff, (b * H + h) * SQ + qi, phi, cq, state, z, ck);
      };
      if (!causal) {
        for (let j = 0; j < SK; j++) addKey(j);
        for (let g = 0; g < G; g++) for (let qi = 0; qi < SQ; qi++) row(kvh * G + g, qi);
        continue;
      }
      let next = 0;
      for (let qi = 0; qi < SQ; qi++) {
        for (; next <= qi && next < SK; next++) addKey(next);
        for (let g = 0; g < G; g++) row(kvh * G + g, qi);
      }
    }
  }
  return res;
}

/**
 * The textbook baseline of linear attention: per (batch, head) the seqQ × seqKV kernel matrix
 * A_ij = φ̃(q_i) · φ̃(k_j) (f32, causal entries zeroed) is materialised, then out = A V / A 1.
 */
export function linearNaive(p: Prepared, kernel: LinearKernel): AttentionOutputs {
  const { spec } = p;
  const { q: qa, k: ka, v: va } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDimV: DV } = spec;
  const causal = spec.mask !== null;
  const F = kernel.features;
  const acc = specAccess(spec);
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  const a = new Float32Array(SQ * SK);
  const qf = new Float64Array(SQ * F);
  const cq = new Float64Array(SQ);
  const kf = new Float64Array(SK * F);
  const cj = new Float64Array(SK);
  const o = new Float64Array(DV);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      let ck = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < SK; j++) {
        const off = acc.k.base(b, kvh) + j * acc.k.stride;
        cj[j] = kernel.map(ka, off, kernel.key, kf.subarray(j * F, (j + 1) * F));
        if (cj[j] > ck) ck = cj[j];
      }
      for (let qi = 0; qi < SQ; qi++) {
        const off = acc.q.base(b, h) + qi * acc.q.stride;
        cq[qi] = kernel.map(qa, off, kernel.query, qf.subarray(qi * F, (qi + 1) * F));
      }
      for (let qi = 0; qi < SQ; qi++) {
        for (let j = 0; j < SK; j++) {
          let dot = 0;
          if (!causal || j <= qi) {
            for (let f = 0; f < F; f++) dot += qf[qi * F + f] * kf[j * F + f];
            dot *= Math.exp(cj[j] - ck);
          }
          a[qi * SK + j] = dot;
        }
      }
      for (let qi = 0; qi < SQ; qi++) {
        let den = 0;
        o.fill(0);
        for (let j = 0; j < SK; j++) {
          const w = a[qi * SK + j];
          den += w;
          const vOff = acc.v.base(b, kvh) + j * acc.v.stride;
          for (let d = 0; d < DV; d++) o[d] += w * va[vOff + d];
        }
        const lseIdx = (b * H + h) * SQ + qi;
        if (!(den > 0)) {
          lse[lseIdx] = Number.NEGATIVE_INFINITY;
          continue;
        }
        const off = acc.out.base(b, h) + qi * acc.out.stride;
        for (let d = 0; d < DV; d++) out[off + d] = o[d] / den;
        lse[lseIdx] = Math.log(den) + cq[qi] + ck;
      }
    }
  }
  return { out, lse };
}
