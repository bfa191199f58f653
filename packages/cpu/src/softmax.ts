import { type AttentionOutputs, type BlockLayout, kvHeadOf, layoutSlice } from '@tessera/core';
import { dot, specAccess } from './access.js';
import { badScore, type Prepared } from './prepared.js';

/**
 * Blockwise softmax attention over a block layout (FlashAttention's schedule on one core): each
 * Q block walks only the KV blocks its layout row lists, evaluating the mask only in partial
 * blocks, with an online softmax per row in f64. Extra memory: one Q block of accumulators.
 */
export function softmaxTiled(p: Prepared, layout: BlockLayout): AttentionOutputs {
  const { spec, mask, scoreMod } = p;
  const { q: qa, k: ka, v: va } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV, scale } = spec;
  const acc = specAccess(spec);
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  const { blockQ: bq, blockKV: bk, numQBlocks: nq, rowStart, kvBlocks, full } = layout;
  const rows = Math.min(bq, SQ);
  const m = new Float64Array(rows);
  const l = new Float64Array(rows);
  const o = new Float64Array(rows * DV);
  const s = new Float64Array(Math.min(bk, SK));
  const qStride = acc.q.stride;
  const kStride = acc.k.stride;
  const vStride = acc.v.stride;

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      const qBase = acc.q.base(b, h);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const slice = layoutSlice(layout, b, h);
      for (let i = 0; i < nq; i++) {
        const q0 = i * bq;
        const q1 = Math.min(SQ, q0 + bq);
        const n = q1 - q0;
        m.fill(Number.NEGATIVE_INFINITY, 0, n);
        l.fill(0, 0, n);
        o.fill(0, 0, n * DV);
        const r = slice * nq + i;
        for (let e = rowStart[r]; e < rowStart[r + 1]; e++) {
          const k0 = kvBlocks[e] * bk;
          const k1 = Math.min(SK, k0 + bk);
          const checkMask = mask !== null && full[e] === 0;
          for (let qi = q0; qi < q1; qi++) {
            const row = qi - q0;
            const qOff = qBase + qi * qStride;
            let blockMax = Number.NEGATIVE_INFINITY;
            for (let kv = k0; kv < k1; kv++) {
              if (checkMask && !mask(b, h, qi, kv, 0)) {
                s[kv - k0] = Number.NEGATIVE_INFINITY;
                continue;
              }
              const kOff = kBase + kv * kStride;
              const raw = scale * dot(qa, qOff, ka, kOff, D);
              const sc = scoreMod === null ? raw : (scoreMod(b, h, qi, kv, raw) as number);
              if (!(sc < Number.POSITIVE_INFINITY))
                throw badScore(spec, sc, { b, h, q: qi, kv, score: raw });
              s[kv - k0] = sc;
              if (sc > blockMax) blockMax = sc;
            }
            if (blockMax === Number.NEGATIVE_INFINITY) continue;
            const mOld = m[row];
            const mNew = Math.max(mOld, blockMax);
            const oOff = row * DV;
            if (mNew > mOld && mOld !== Number.NEGATIVE_INFINITY) {
              const alpha = Math.exp(mOld - mNew);
              l[row] *= alpha;
              for (let d = 0; d < DV; d++) o[oOff + d] *= alpha;
            }
            let sum = l[row];
            for (let kv = k0; kv < k1; kv++) {
              const sc = s[kv - k0];
              if (sc === Number.NEGATIVE_INFINITY) continue;
              const w = Math.exp(sc - mNew);
              sum += w;
              const vOff = vBase + kv * vStride;
              for (let d = 0; d < DV; d++) o[oOff + d] += w * va[vOff + d];
            }
            l[row] = sum;
            m[row] = mNew;
          }
        }
        writeRows(p, out, lse, b, h, q0, n, m, l, o);
      }
    }
  }
  return { out, lse };
}

/** Writes finished rows: out = acc / l and lse = m + ln l, or zeros and -Infinity when l = 0. */
function writeRows(
  p: Prepared,
  out: Float32Array,
  lse: Float32Array,
  b: number,
  h: number,
  q0: number,
  n: number,
  m: Float64Array,
  l: Float64Array,
  o: Float64Array,
): void {
  const { spec } = p;
  const DV = spec.headDimV;
  const acc = specAccess(spec).out;
  const oBase = acc.base(b, h);
  const lseBase = (b * spec.headsQ + h) * spec.seqQ;
  for (let row = 0; row < n; row++) {
    const qi = q0 + row;
    if (l[row] === 0) {
      lse[lseBase + qi] = Number.NEGATIVE_INFINITY;
      continue; // out stays 0
    }
    const inv = 1 / l[row];
    const off = oBase + qi * acc.stride;
    for (let d = 0; d < DV; d++) out[off + d] = o[row * DV + d] * inv;
    lse[lseBase + qi] = m[row] + Math.log(l[row]);
  }
}

/**
 * The textbook baseline: per (batch, head), the full seqQ × seqKV matrix of softmax
 * probabilities P (f32, as a device would store it) is materialised, then out = P · V.
 * Every element's mask is evaluated; the block layout is not consulted.
 */
export function softmaxNaive(p: Prepared): AttentionOutputs {
  const { spec, mask, scoreMod } = p;
  const { q: qa, k: ka, v: va } = p.inputs;
  const { batch: B, headsQ: H, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV, scale } = spec;
  const acc = specAccess(spec);
  const out = new Float32Array(B * H * SQ * DV);
  const lse = new Float32Array(B * H * SQ);
  const probs = new Float32Array(SQ * SK);
  const rowSum = new Float64Array(SQ);
  const scores = new Float64Array(SK);
  const o = new Float64Array(DV);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const kvh = kvHeadOf(spec, h);
      const qBase = acc.q.base(b, h);
      const kBase = acc.k.base(b, kvh);
      const vBase = acc.v.base(b, kvh);
      const oBase = acc.out.base(b, h);
      const lseBase = (b * H + h) * SQ;
      // Scores row by row, then P = exp(S - rowmax) into the N×N matrix.
      for (let qi = 0; qi < SQ; qi++) {
        const qOff = qBase + qi * acc.q.stride;
        let max = Number.NEGATIVE_INFINITY;
        for (let kv = 0; kv < SK; kv++) {
          if (mask !== null && !mask(b, h, qi, kv, 0)) {
            scores[kv] = Number.NEGATIVE_INFINITY;
            continue;
          }
          const kOff = kBase + kv * acc.k.stride;
          const raw = scale * dot(qa, qOff, ka, kOff, D);
          const sc = scoreMod === null ? raw : (scoreMod(b, h, qi, kv, raw) as number);
          if (!(sc < Number.POSITIVE_INFINITY))
            throw badScore(spec, sc, { b, h, q: qi, kv, score: raw });
          scores[kv] = sc;
          if (sc > max) max = sc;
        }
        let sum = 0;
        const pOff = qi * SK;
        if (max === Number.NEGATIVE_INFINITY) {
          probs.fill(0, pOff, pOff + SK);
        } else {
          for (let kv = 0; kv < SK; kv++) {
            probs[pOff + kv] = Math.exp(scores[kv] - max);
            sum += probs[pOff + kv];
          }
        }
        rowSum[qi] = sum;
        lse[lseBase + qi] = sum === 0 ? Number.NEGATIVE_INFINITY : max + Math.log(sum);
      }
      // out = P · V / rowSum.
      for (let qi = 0; qi < SQ; qi++) {
        if (rowSum[qi] === 0) continue;
        o.fill(0);
        const pOff = qi * SK;
        for (let kv = 0; kv < SK; kv++) {
          const w = probs[pOff + kv];
          const vOff = vBase + kv * acc.v.stride;
          for (let d = 0; d < DV; d++) o[d] += w * va[vOff + d];
        }
        const inv = 1 / rowSum[qi];
        const off = oBase + qi * acc.out.stride;
        for (let d = 0; d < DV; d++) out[off + d] = o[d] * inv;
      }
    }
  }
  return { out, lse };
}
