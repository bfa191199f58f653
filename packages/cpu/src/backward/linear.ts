import { type AttentionSpec, groupSize, kvHeadOf } from '@tessera/core';
import { dot, specAccess } from '../access.js';
import type { LinearKernel } from '../linear.js';
import type { BackwardPrepared, Gradients64 } from '../prepared.js';
import { emptyGradients } from './softmax.js';

/*
 * The backward of linear attention (the forward and its notation: core's features.ts). With
 * K_ij = φ(x_i) · φ(y_j) over the keys J_i row i sees, den_i = Σ K_ij and out_i = Σ K_ij v_j / den_i:
 *
 *   ∂L/∂K_ij = (dOut_i · v_j − D_i) / den_i      with D_i = dOut_i · out_i
 *   dv_j = Σ_i K_ij / den_i · dOut_i
 *   ∂L/∂φ(x_i) = Σ_j ∂L/∂K_ij φ(y_j),  ∂L/∂φ(y_j) = Σ_i ∂L/∂K_ij φ(x_i)
 *   dq_i = query · J_φ(x_i)ᵀ ∂L/∂φ(x_i),  dk_j = key · J_φ(y_j)ᵀ ∂L/∂φ(y_j)
 *
 * The random matrix is a constant. The stabilisers cancel exactly: everything is computed on the
 * stabilised features φ̃ = φ · exp(−c) (query rows: their own c; keys: rescaled to the maximum c
 * of the (batch, KV head), so ψ_j = φ(y_j) · exp(−c_max)), and J_φᵀ G · exp(−c) is a function of
 * φ̃ (featureVjp). out_i is recomputed in f64 from the features (den_i is needed anyway), so D_i
 * is that of the exact forward, not of the caller's f32 out. Rows with den_i ≤ 0 (no attention
 * mass: out = 0, lse = -Infinity) get no gradient, as their output is a constant.
 */

/**
 * dst[dOff + d] += factor · mul · (J_φ(x)ᵀ G · exp(−c))_d for x = mul · src[sOff..], where `phi`
 * holds φ̃(x) = φ(x) · exp(−c) as the forward's feature map wrote it. favor+: ∂φ_r/∂x =
 * φ_r (w_r − x); trig-rf: ∂φ_r/∂x = x φ_r + φ_{m+r} w_r and ∂φ_{m+r}/∂x = x φ_{m+r} − φ_r w_r.
 */
type FeatureVjp = (
  src: Float32Array,
  sOff: number,
  mul: number,
  phi: ArrayLike<number>,
  g: ArrayLike<number>,
  factor: number,
  dst: Float64Array,
  dOff: number,
) => void;

function featureVjp(spec: AttentionSpec, kernel: LinearKernel): FeatureVjp {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('featureVjp() needs a linear spec');
  const D = spec.headDim;
  if (k.featureMap === 'elu+1' || k.featureMap === 'relu') {
    const elu = k.featureMap === 'elu+1';
    return (src, sOff, mul, phi, g, factor, dst, dOff) => {
      const f = factor * mul;
      for (let d = 0; d < D; d++) {
        const x = mul * src[sOff + d];
        // elu+1: 1 above 0, exp(x) = φ(x) below; relu: 1 above 0, 0 below (and at 0).
        const slope = x > 0 ? 1 : elu ? phi[d] : 0;
        dst[dOff + d] += f * g[d] * slope;
      }
    };
  }
  const w = kernel.weights as Float64Array;
  const m = k.features;
  const beta = new Float64Array(m);
  const favor = k.featureMap === 'favor+';
  // Both maps give α x + Σ_r β_r w_r.
  return (src, sOff, mul, phi, g, factor, dst, dOff) => {
    let alpha = 0;
    for (let r = 0; r < m; r++) {
      if (favor) {
        beta[r] = g[r] * phi[r];
        alpha -= beta[r];
      } else {
        beta[r] = g[r] * phi[m + r] - g[m + r] * phi[r];
        alpha += g[r] * phi[r] + g[m + r] * phi[m + r];
      }
    }
    const f = factor * mul;
    for (let d = 0; d < D; d++) {
      let sum = alpha * mul * src[sOff + d];
      for (let r = 0; r < m; r++) sum += beta[r] * w[r * D + d];
      dst[dOff + d] += f * sum;
    }
  };
}

/** Stabilised key features of (b, kvh): φ̃(y_j) into kf and exp(c_j − max c) into ce. */
function keyFeatures(
  p: BackwardPrepared,
  kernel: LinearKernel,
  b: number,
  kvh: number,
  kf: Float64Array,
  ce: Float64Array,
): void {
  const acc = specAccess(p.spec).k;
  const F = kernel.features;
  const base = acc.base(b, kvh);
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < ce.length; j++) {
    ce[j] = kernel.map(
      p.inputs.k,
      base + j * acc.stride,
      kernel.key,
      kf.subarray(j * F, j * F + F),
    );
    if (ce[j] > max) max = ce[j];
  }
  for (let j = 0; j < ce.length; j++) ce[j] = Math.exp(ce[j] - max);
}

/**
 * Linear attention's backward in O(N · F · DV) per (batch, KV head): a forward sweep with the
 * prefix sums S = Σ ψ_j v_jᵀ and z = Σ ψ_j (as the forward's) gives each row's den, out, D and dq;
 * a backward sweep with the suffix sums R = Σ_i φ̃_i dOut_iᵀ / den_i and r = Σ_i D_i φ̃_i / den_i
 * over the rows that see key j (every query head of the group) gives dk_j and dv_j. Non-causal:
 * the sums are over everything.
 */
export function linearBackwardPrefix(p: BackwardPrepared, kernel: LinearKernel): Gradients64 {
  const { spec } = p;
  const { q: qa, v: va, dOut } = p.inputs;
  const { batch: B, headsKV: HK, seqQ: SQ, seqKV: SK, headDimV: DV } = spec;
  const causal = spec.mask !== null;
  const G = groupSize(spec);
  const F = kernel.features;
  const acc = specAccess(spec);
  const vjp = featureVjp(spec, kernel);
  const grads = emptyGradients(spec, []);
  const { dq, dk, dv } = grads;
  const kf = new Float64Array(SK * F);
  const ce = new Float64Array(SK);
  const rowF = new Float64Array(G * SQ * F); // φ̃(x_i) / den_i
  const delta = new Float64Array(G * SQ);
  const live = new Uint8Array(G * SQ);
  const S = new Float64Array(F * DV);
  const z = new Float64Array(F);
  const gv = new Float64Array(F);

  for (let b = 0; b < B; b++) {
    for (let kvh = 0; kvh < HK; kvh++) {
      keyFeatures(p, kernel, b, kvh, kf, ce);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      S.fill(0);
      z.fill(0);
      const addKey = (j: number): void => {
        const vOff = vBase + j * acc.v.stride;
        for (let f = 0; f < F; f++) {
          const w = kf[j * F + f] * ce[j];
          z[f] += w;
          for (let d = 0; d < DV; d++) S[f * DV + d] += w * va[vOff + d];
        }
      };
      const rowForward = (g: number, qi: number): void => {
        const h = kvh * G + g;
        const r = g * SQ + qi;
        const qOff = acc.q.base(b, h) + qi * acc.q.stride;
        const oOff = acc.out.base(b, h) + qi * acc.out.stride;
        const phi = rowF.subarray(r * F, r * F + F);
        kernel.map(qa, qOff, kernel.query, phi);
        const den = dot(phi, 0, z, 0, F);
        live[r] = den > 0 ? 1 : 0;
        if (!live[r]) return;
        let D = 0;
        for (let d = 0; d < DV; d++) {
          let num = 0;
          for (let f = 0; f < F; f++) num += phi[f] * S[f * DV + d];
          D += dOut[oOff + d] * num;
        }
        D /= den;
        for (let f = 0; f < F; f++) {
          let s = 0;
          for (let d = 0; d < DV; d++) s += S[f * DV + d] * dOut[oOff + d];
          gv[f] = (s - D * z[f]) / den;
        }
        vjp(qa, qOff, kernel.query, phi, gv, 1, dq, qOff);
        for (let f = 0; f < F; f++) phi[f] /= den;
        delta[r] = D;
      };
      if (causal) {
        let next = 0;
        for (let qi = 0; qi < SQ; qi++) {
          for (; next <= qi && next < SK; next++) addKey(next);
          for (let g = 0; g < G; g++) rowForward(g, qi);
        }
      } else {
        for (let j = 0; j < SK; j++) addKey(j);
        for (let qi = 0; qi < SQ; qi++) for (let g = 0; g < G; g++) rowForward(g, qi);
      }

      // Suffix sweep: S and z are reused as R and r.
      const R = S.fill(0);
      const rs = z.fill(0);
      const addRow = (g: number, qi: number): void => {
        const r = g * SQ + qi;
        if (!live[r]) return;
        const oOff = acc.out.base(b, kvh * G + g) + qi * acc.out.stride;
        for (let f = 0; f < F; f++) {
          const a = rowF[r * F + f];
          rs[f] += delta[r] * a;
          for (let d = 0; d < DV; d++) R[f * DV + d] += a * dOut[oOff + d];
        }
      };
      const keyBackward = (j: number): void => {
        const vOff = vBase + j * acc.v.stride;
        for (let f = 0; f < F; f++) {
          let s = 0;
          for (let d = 0; d < DV; d++) s += R[f * DV + d] * va[vOff + d];
          gv[f] = s - rs[f];
          const psi = kf[j * F + f] * ce[j];
          for (let d = 0; d < DV; d++) dv[vOff + d] += psi * R[f * DV + d];
        }
        const kOff = kBase + j * acc.k.stride;
        vjp(p.inputs.k, kOff, kernel.key, kf.subarray(j * F, j * F + F), gv, ce[j], dk, kOff);
      };
      if (causal) {
        let next = SQ - 1;
        for (let j = SK - 1; j >= 0; j--) {
          for (; next >= j; next--) for (let g = 0; g < G; g++) addRow(g, next);
          keyBackward(j);
        }
      } else {
        for (let qi = 0; qi < SQ; qi++) for (let g = 0; g < G; g++) addRow(g, qi);
        for (let j = 0; j < SK; j++) keyBackward(j);
      }
    }
  }
  return grads;
}

/**
 * The textbook baseline: per (batch, head) the seqQ × seqKV kernel matrix A_ij = φ̃(x_i) · ψ_j
 * (causal entries zero) and its gradient dA_ij = (dOut_i · v_j − D_i) / den_i are materialised
 * (f64), then dv = (A / den)ᵀ dOut, ∂L/∂φ(x) = dA ψ and ∂L/∂φ(y) = dAᵀ φ̃(x) as matrix products.
 */
export function linearBackwardNaive(p: BackwardPrepared, kernel: LinearKernel): Gradients64 {
  const { spec } = p;
  const { q: qa, k: ka, v: va, dOut } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDimV: DV } = spec;
  const causal = spec.mask !== null;
  const F = kernel.features;
  const acc = specAccess(spec);
  const vjp = featureVjp(spec, kernel);
  const grads = emptyGradients(spec, []);
  const { dq, dk, dv } = grads;
  const kf = new Float64Array(SK * F);
  const ce = new Float64Array(SK);
  const qf = new Float64Array(SQ * F);
  const a = new Float64Array(SQ * SK);
  const dA = new Float64Array(SQ * SK);
  const den = new Float64Array(SQ);
  const o = new Float64Array(DV);
  const gv = new Float64Array(F);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      keyFeatures(p, kernel, b, kvh, kf, ce);
      const qBase = acc.q.base(b, h);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const oBase = acc.out.base(b, h);
      for (let qi = 0; qi < SQ; qi++) {
        const phi = qf.subarray(qi * F, qi * F + F);
        kernel.map(qa, qBase + qi * acc.q.stride, kernel.query, phi);
        for (let j = 0; j < SK; j++) {
          a[qi * SK + j] = !causal || j <= qi ? dot(phi, 0, kf, j * F, F) * ce[j] : 0;
        }
      }
      for (let qi = 0; qi < SQ; qi++) {
        const row = qi * SK;
        dA.fill(0, row, row + SK);
        let sum = 0;
        for (let j = 0; j < SK; j++) sum += a[row + j];
        den[qi] = sum;
        if (!(sum > 0)) continue; // no attention mass: constant output
        o.fill(0);
        for (let j = 0; j < SK; j++) {
          const vOff = vBase + j * acc.v.stride;
          for (let d = 0; d < DV; d++) o[d] += a[row + j] * va[vOff + d];
        }
        const oOff = oBase + qi * acc.out.stride;
        const D = dot(dOut, oOff, o, 0, DV) / sum;
        for (let j = 0; j < SK; j++) {
          if (causal && j > qi) continue;
          const vOff = vBase + j * acc.v.stride;
          dA[row + j] = (dot(dOut, oOff, va, vOff, DV) - D) / sum;
          const w = a[row + j] / sum;
          for (let d = 0; d < DV; d++) dv[vOff + d] += w * dOut[oOff + d];
        }
      }
      for (let qi = 0; qi < SQ; qi++) {
        if (!(den[qi] > 0)) continue;
        gv.fill(0);
        for (let j = 0; j < SK; j++) {
          const w = dA[qi * SK + j] * ce[j];
          for (let f = 0; f < F; f++) gv[f] += w * kf[j * F + f];
        }
        const qOff = qBase + qi * acc.q.stride;
        vjp(qa, qOff, kernel.query, qf.subarray(qi * F, qi * F + F), gv, 1, dq, qOff);
      }
      for (let j = 0; j < SK; j++) {
        gv.fill(0);
        for (let qi = 0; qi < SQ; qi++) {
          const w = dA[qi * SK + j];
          for (let f = 0; f < F; f++) gv[f] += w * qf[qi * F + f];
        }
        const kOff = kBase + j * acc.k.stride;
        vjp(ka, kOff, kernel.key, kf.subarray(j * F, j * F + F), gv, ce[j], dk, kOff);
      }
    }
  }
  return grads;
}
