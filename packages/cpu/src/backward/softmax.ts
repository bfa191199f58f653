import {
  type AttentionSpec,
  type BlockLayout,
  type CompiledExpr,
  compileJs,
  kvHeadOf,
  layoutSlice,
} from '@tessera/core';
import { gradientSlots, scoreModGradient } from '@tessera/core/backend';
import { dot, specAccess } from '../access.js';
import { type BackwardPrepared, badScore, type Gradients64 } from '../prepared.js';

/** The score modification's gradient as closures over (b, h, q, kv, score). */
export interface ScoreGradient {
  /** ∂s'/∂score; null when the spec has no score modification (then it is 1). */
  readonly dScore: CompiledExpr | null;
  /** Per captured-tensor read: T[slot][index] += dS' · weight. */
  readonly terms: readonly {
    readonly slot: number;
    readonly index: CompiledExpr;
    readonly weight: CompiledExpr;
  }[];
  /** Slots that receive a gradient (sorted). */
  readonly slots: readonly number[];
}

const gradients = new WeakMap<AttentionSpec, ScoreGradient>();

/** core's scoreModGradient of the spec's score modification, compiled once per spec. */
export function scoreGradient(spec: AttentionSpec): ScoreGradient {
  const hit = gradients.get(spec);
  if (hit) return hit;
  let result: ScoreGradient = { dScore: null, terms: [], slots: [] };
  if (spec.scoreMod !== null) {
    const tensors = spec.tensors.map((t) => t.data);
    const g = scoreModGradient(
      spec.scoreMod.expr,
      spec.tensors.map((t) => t.dtype),
    );
    result = {
      dScore: compileJs(g.dScore, tensors),
      terms: g.tensors.map((t) => ({
        slot: t.slot,
        index: compileJs(t.index, tensors),
        weight: compileJs(t.weight, tensors),
      })),
      slots: gradientSlots(g),
    };
  }
  gradients.set(spec, result);
  return result;
}

/** f64 accumulators for dq, dk, dv (spec layout) and the tensor slots the gradient reaches. */
export function emptyGradients(spec: AttentionSpec, slots: readonly number[]): Gradients64 {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D } = spec;
  return {
    dq: new Float64Array(B * H * SQ * D),
    dk: new Float64Array(B * HK * SK * D),
    dv: new Float64Array(B * HK * SK * spec.headDimV),
    grads: spec.tensors.map((t, slot) =>
      slots.includes(slot) ? new Float64Array(t.data.length) : null,
    ),
  };
}

/** D_i = dOut_i · out_i for every row of (b, h), into `delta` (the FlashAttention-2 pre-pass). */
function rowDeltas(p: BackwardPrepared, b: number, h: number, delta: Float64Array): void {
  const { spec } = p;
  const acc = specAccess(spec).out;
  const base = acc.base(b, h);
  for (let qi = 0; qi < spec.seqQ; qi++) {
    const off = base + qi * acc.stride;
    delta[qi] = dot(p.inputs.dOut, off, p.inputs.out, off, spec.headDimV);
  }
}

/** Adds dS' · weight at each captured-tensor element the score modification read at (b, h, qi, kv). */
function addTensorGrads(
  sg: ScoreGradient,
  g: Gradients64,
  dsp: number,
  b: number,
  h: number,
  qi: number,
  kv: number,
  raw: number,
): void {
  for (const term of sg.terms) {
    const t = g.grads[term.slot] as Float64Array;
    const idx = term.index(b, h, qi, kv, raw) as number;
    // The forward's load reads 0 outside the tensor: no element, no gradient.
    if (idx >= 0 && idx < t.length) t[idx] += dsp * (term.weight(b, h, qi, kv, raw) as number);
  }
}

/**
 * FlashAttention-2's backward on one core, in f64: per (batch, head), each Q block walks the KV
 * blocks its layout row lists (the forward's schedule; the mask is evaluated in partial blocks
 * only), recomputes P = exp(s' − lse) from q, k and the given lse, and accumulates
 * dv_j += P dOut_i, dS' = P (dOut_i · v_j − D_i), dk_j += scale · dS q_i, dq_i += scale · dS k_j
 * with dS = dS' · ∂s'/∂score, and the captured tensors' gradients. No N×N buffer.
 */
export function softmaxBackwardTiled(
  p: BackwardPrepared,
  layout: BlockLayout,
  sg: ScoreGradient,
): Gradients64 {
  const { spec, mask, scoreMod } = p;
  const { q: qa, k: ka, v: va, lse, dOut } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV, scale } = spec;
  const acc = specAccess(spec);
  const g = emptyGradients(spec, sg.slots);
  const { dq, dk, dv } = g;
  const delta = new Float64Array(SQ);
  const { blockQ: bq, blockKV: bk, numQBlocks: nq, rowStart, kvBlocks, full } = layout;

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      const qBase = acc.q.base(b, h);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const oBase = acc.out.base(b, h);
      const lseBase = (b * H + h) * SQ;
      rowDeltas(p, b, h, delta);
      const slice = layoutSlice(layout, b, h);
      for (let i = 0; i < nq; i++) {
        const q0 = i * bq;
        const q1 = Math.min(SQ, q0 + bq);
        const r = slice * nq + i;
        for (let e = rowStart[r]; e < rowStart[r + 1]; e++) {
          const k0 = kvBlocks[e] * bk;
          const k1 = Math.min(SK, k0 + bk);
          const checkMask = mask !== null && full[e] === 0;
          for (let qi = q0; qi < q1; qi++) {
            const l = lse[lseBase + qi];
            if (l === Number.NEGATIVE_INFINITY) continue; // fully masked row: no gradient
            const qOff = qBase + qi * acc.q.stride;
            const oOff = oBase + qi * acc.out.stride;
            for (let kv = k0; kv < k1; kv++) {
              if (checkMask && !mask(b, h, qi, kv, 0)) continue;
              const kOff = kBase + kv * acc.k.stride;
              const raw = scale * dot(qa, qOff, ka, kOff, D);
              const sc = scoreMod === null ? raw : (scoreMod(b, h, qi, kv, raw) as number);
              if (sc === Number.NEGATIVE_INFINITY) continue;
              if (!(sc < Number.POSITIVE_INFINITY))
                throw badScore(spec, sc, { b, h, q: qi, kv, score: raw });
              const pr = Math.exp(sc - l);
              if (pr === 0) continue;
              const vOff = vBase + kv * acc.v.stride;
              const dsp = pr * (dot(dOut, oOff, va, vOff, DV) - delta[qi]);
              for (let d = 0; d < DV; d++) dv[vOff + d] += pr * dOut[oOff + d];
              if (dsp === 0) continue;
              const ds =
                scale * dsp * (sg.dScore === null ? 1 : (sg.dScore(b, h, qi, kv, raw) as number));
              for (let d = 0; d < D; d++) {
                dk[kOff + d] += ds * qa[qOff + d];
                dq[qOff + d] += ds * ka[kOff + d];
              }
              if (sg.terms.length > 0) addTensorGrads(sg, g, dsp, b, h, qi, kv, raw);
            }
          }
        }
      }
    }
  }
  return g;
}

/**
 * The textbook backward as a baseline: per (batch, head) the seqQ × seqKV matrices of raw scores
 * S and probabilities P (f64) are materialised with every element's mask evaluated (the block
 * layout is not consulted), then dV = Pᵀ dOut, dS' = P ∘ (dOut Vᵀ − D 1ᵀ), dQ = scale · dS K and
 * dK = scale · dSᵀ Q as matrix products.
 */
export function softmaxBackwardNaive(p: BackwardPrepared, sg: ScoreGradient): Gradients64 {
  const { spec, mask, scoreMod } = p;
  const { q: qa, k: ka, v: va, lse, dOut } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV, scale } = spec;
  const acc = specAccess(spec);
  const g = emptyGradients(spec, sg.slots);
  const { dq, dk, dv } = g;
  const delta = new Float64Array(SQ);
  const raw = new Float64Array(SQ * SK);
  const probs = new Float64Array(SQ * SK);
  const dS = new Float64Array(SK);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      const qBase = acc.q.base(b, h);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const oBase = acc.out.base(b, h);
      rowDeltas(p, b, h, delta);
      // S and P; P = 0 where masked, where s' = -Infinity and on fully masked rows.
      for (let qi = 0; qi < SQ; qi++) {
        const l = lse[(b * H + h) * SQ + qi];
        for (let kv = 0; kv < SK; kv++) {
          const at = qi * SK + kv;
          probs[at] = 0;
          if (l === Number.NEGATIVE_INFINITY || (mask !== null && !mask(b, h, qi, kv, 0))) continue;
          const s = scale * dot(qa, qBase + qi * acc.q.stride, ka, kBase + kv * acc.k.stride, D);
          const sc = scoreMod === null ? s : (scoreMod(b, h, qi, kv, s) as number);
          if (sc === Number.NEGATIVE_INFINITY) continue;
          if (!(sc < Number.POSITIVE_INFINITY))
            throw badScore(spec, sc, { b, h, q: qi, kv, score: s });
          raw[at] = s;
          probs[at] = Math.exp(sc - l);
        }
      }
      // dV = Pᵀ dOut.
      for (let kv = 0; kv < SK; kv++) {
        const vOff = vBase + kv * acc.v.stride;
        for (let qi = 0; qi < SQ; qi++) {
          const pr = probs[qi * SK + kv];
          if (pr === 0) continue;
          const oOff = oBase + qi * acc.out.stride;
          for (let d = 0; d < DV; d++) dv[vOff + d] += pr * dOut[oOff + d];
        }
      }
      // dS row by row, then dQ_i = scale Σ_j dS_ij k_j; dK_j += scale dS_ij q_i.
      for (let qi = 0; qi < SQ; qi++) {
        const oOff = oBase + qi * acc.out.stride;
        const qOff = qBase + qi * acc.q.stride;
        for (let kv = 0; kv < SK; kv++) {
          const at = qi * SK + kv;
          dS[kv] = 0;
          const pr = probs[at];
          if (pr === 0) continue;
          const dsp = pr * (dot(dOut, oOff, va, vBase + kv * acc.v.stride, DV) - delta[qi]);
          if (dsp === 0) continue;
          const s = raw[at];
          dS[kv] = dsp * (sg.dScore === null ? 1 : (sg.dScore(b, h, qi, kv, s) as number));
          if (sg.terms.length > 0) addTensorGrads(sg, g, dsp, b, h, qi, kv, s);
        }
        for (let d = 0; d < D; d++) {
          let sum = 0;
          for (let kv = 0; kv < SK; kv++) sum += dS[kv] * ka[kBase + kv * acc.k.stride + d];
          dq[qOff + d] += scale * sum;
        }
        for (let kv = 0; kv < SK; kv++) {
          if (dS[kv] === 0) continue;
          const kOff = kBase + kv * acc.k.stride;
          const w = scale * dS[kv];
          for (let d = 0; d < D; d++) dk[kOff + d] += w * qa[qOff + d];
        }
      }
    }
  }
  return g;
}
