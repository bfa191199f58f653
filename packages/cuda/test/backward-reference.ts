// A dense f64 reference of the softmax backward pass, for the emulator and device tests (until
// the cpu backend's backward is used instead): every (q, kv) pair, the spec's mask and score
// modification through core's JS lowering, tensor gradients through core's scoreModGradient.
import {
  type AttentionGradients,
  type AttentionSpec,
  type BackwardInputs,
  compileJs,
  type ExprNode,
  elementIndex,
  roundToDtype,
} from '@tessera/core';
import { children, scoreModGradient } from '@tessera/core/backend';

export function referenceBackward(spec: AttentionSpec, inputs: BackwardInputs): AttentionGradients {
  const r = (x: Float32Array) => roundToDtype(x, spec.dtype);
  const [q, k, v, out, dOut] = [inputs.q, inputs.k, inputs.v, inputs.out, inputs.dOut].map(r) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK, headDim: D, headDimV: DV } = spec;
  const G = H / HK;
  const data = spec.tensors.map((t) => t.data);
  const mask = spec.mask ? compileJs(spec.mask.expr, data) : null;
  const mod = spec.scoreMod ? compileJs(spec.scoreMod.expr, data) : null;
  const grad = spec.scoreMod
    ? scoreModGradient(
        spec.scoreMod.expr,
        spec.tensors.map((t) => t.dtype),
      )
    : null;
  const dScore = grad ? compileJs(grad.dScore, data) : null;
  const terms = (grad?.tensors ?? []).map((t) => ({
    slot: t.slot,
    index: compileJs(t.index, data),
    weight: compileJs(t.weight, data),
  }));
  const ix = (
    heads: number,
    seq: number,
    dim: number,
    b: number,
    h: number,
    s: number,
    d: number,
  ) => elementIndex(spec.layout, heads, seq, dim, b, h, s, d);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const reads = new Set<number>();
  const walk = (n: ExprNode) => {
    if (n.op === 'load') reads.add(n.tensor);
    for (const c of children(n)) walk(c);
  };
  if (spec.scoreMod) walk(spec.scoreMod.expr);
  const tg = spec.tensors.map((t, s) =>
    t.dtype === 'f32' && reads.has(s) ? new Float64Array(t.length) : null,
  );
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / G);
      for (let i = 0; i < SQ; i++) {
        const lse = inputs.lse[(b * H + h) * SQ + i] as number;
        if (lse === Number.NEGATIVE_INFINITY) continue;
        let Di = 0;
        for (let d = 0; d < DV; d++)
          Di +=
            (dOut[ix(H, SQ, DV, b, h, i, d)] as number) *
            (out[ix(H, SQ, DV, b, h, i, d)] as number);
        for (let j = 0; j < SK; j++) {
          if (mask && !mask(b, h, i, j, 0)) continue;
          let dot = 0;
          for (let d = 0; d < D; d++)
            dot +=
              (q[ix(H, SQ, D, b, h, i, d)] as number) * (k[ix(HK, SK, D, b, hk, j, d)] as number);
          const score = dot * spec.scale;
          const s2 = mod ? Number(mod(b, h, i, j, score)) : score;
          const p = Math.exp(s2 - lse);
          if (!(p > 0)) continue;
          let dp = 0;
          for (let d = 0; d < DV; d++)
            dp +=
              (dOut[ix(H, SQ, DV, b, h, i, d)] as number) *
              (v[ix(HK, SK, DV, b, hk, j, d)] as number);
          const dsp = p * (dp - Di);
          const ds = dsp * (dScore ? Number(dScore(b, h, i, j, score)) : 1) * spec.scale;
          for (let d = 0; d < DV; d++)
            dv[ix(HK, SK, DV, b, hk, j, d)] += p * (dOut[ix(H, SQ, DV, b, h, i, d)] as number);
          for (let d = 0; d < D; d++) {
            dk[ix(HK, SK, D, b, hk, j, d)] += ds * (q[ix(H, SQ, D, b, h, i, d)] as number);
            dq[ix(H, SQ, D, b, h, i, d)] += ds * (k[ix(HK, SK, D, b, hk, j, d)] as number);
          }
          for (const t of terms) {
            const x = Number(t.index(b, h, i, j, score));
            const g = tg[t.slot];
            if (g && x >= 0 && x < g.length) g[x] += dsp * Number(t.weight(b, h, i, j, score));
          }
        }
      }
    }
  }
  return {
    dq: Float32Array.from(dq),
    dk: Float32Array.from(dk),
    dv: Float32Array.from(dv),
    grads: tg.map((g) => (g ? Float32Array.from(g) : null)),
  };
}
