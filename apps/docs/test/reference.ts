// An independent dense attention for checking the samples: plain loops in f64, with the mask and
// score modification written directly in JavaScript (not through core's expression compiler).

export interface DenseShape {
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly seqQ: number;
  readonly seqKV: number;
  readonly headDim: number;
  /** 'bhsd' (default) or 'bshd'. */
  readonly layout?: 'bhsd' | 'bshd';
}

export interface DenseOptions {
  readonly scale?: number;
  readonly allowed?: (b: number, h: number, q: number, kv: number) => boolean;
  readonly modify?: (score: number, b: number, h: number, q: number, kv: number) => number;
}

export function denseAttention(
  s: DenseShape,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  o: DenseOptions = {},
): { out: Float64Array; lse: Float64Array } {
  const D = s.headDim;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const group = s.headsQ / s.headsKV;
  const at = (heads: number, seq: number, b: number, h: number, t: number) =>
    s.layout === 'bshd' ? ((b * seq + t) * heads + h) * D : ((b * heads + h) * seq + t) * D;
  const out = new Float64Array(s.batch * s.headsQ * s.seqQ * D);
  const lse = new Float64Array(s.batch * s.headsQ * s.seqQ);
  const scores = new Float64Array(s.seqKV);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.headsQ; h++) {
      const hk = Math.floor(h / group);
      for (let i = 0; i < s.seqQ; i++) {
        const qi = at(s.headsQ, s.seqQ, b, h, i);
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < s.seqKV; j++) {
          if (o.allowed && !o.allowed(b, h, i, j)) {
            scores[j] = Number.NEGATIVE_INFINITY;
            continue;
          }
          const kj = at(s.headsKV, s.seqKV, b, hk, j);
          let dot = 0;
          for (let d = 0; d < D; d++) dot += (q[qi + d] as number) * (k[kj + d] as number);
          let score = dot * scale;
          if (o.modify) score = o.modify(score, b, h, i, j);
          scores[j] = score;
          if (score > max) max = score;
        }
        const row = (b * s.headsQ + h) * s.seqQ + i;
        const oi = at(s.headsQ, s.seqQ, b, h, i);
        if (max === Number.NEGATIVE_INFINITY) {
          lse[row] = Number.NEGATIVE_INFINITY;
          continue;
        }
        let sum = 0;
        for (let j = 0; j < s.seqKV; j++) {
          if (scores[j] === Number.NEGATIVE_INFINITY) continue;
          const p = Math.exp((scores[j] as number) - max);
          sum += p;
          const vj = at(s.headsKV, s.seqKV, b, hk, j);
          for (let d = 0; d < D; d++)
            out[oi + d] = (out[oi + d] as number) + p * (v[vj + d] as number);
        }
        for (let d = 0; d < D; d++) out[oi + d] = (out[oi + d] as number) / sum;
        lse[row] = max + Math.log(sum);
      }
    }
  }
  return { out, lse };
}

/** Largest |a − b|; equal infinities count as no error. */
export function maxAbsError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    const d = Math.abs((a[i] as number) - (b[i] as number));
    worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(worst, d);
  }
  return worst;
}

/** A seeded stand-in for Math.random (mulberry32), so sample inputs are fresh but reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
