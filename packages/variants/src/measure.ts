import { hashUnit } from '@tessera/core/backend';
import { type System, seededUniform } from './system.js';

/**
 * The inputs a system takes for exact attention's q, k, v (MHA-shaped): k and v are mean-pooled
 * over each group of heads when the system has fewer KV heads (how an MHA checkpoint is turned
 * into MQA/GQA before uptraining).
 */
export function adaptInputs(
  system: System,
  qkv: { q: Float32Array; k: Float32Array; v: Float32Array },
  headsKV: number,
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const want = system.shape.headsKV;
  if (want === headsKV) return qkv;
  const { batch: B, seq: N, headDim: D } = system.shape;
  const g = headsKV / want;
  const pool = (x: Float32Array): Float32Array => {
    const out = new Float32Array(B * want * N * D);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < headsKV; h++) {
        const src = (b * headsKV + h) * N * D;
        const dst = (b * want + Math.floor(h / g)) * N * D;
        for (let i = 0; i < N * D; i++)
          out[dst + i] = (out[dst + i] as number) + (x[src + i] as number) / g;
      }
    }
    return out;
  };
  return { q: qkv.q, k: pool(qkv.k), v: pool(qkv.v) };
}

export interface ErrorStats {
  /** ‖out − exact‖ / ‖exact‖ over all rows. */
  readonly relative: number;
  /** Mean over rows of 1 − cos(out_row, exact_row). */
  readonly cosine: number;
  /** Largest |out − exact|. */
  readonly maxAbs: number;
}

/** Error of an output against exact attention's, both [.., rows, cols] with `cols` columns. */
export function errorStats(out: Float32Array, exact: Float32Array, cols: number): ErrorStats {
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  let cos = 0;
  const rows = exact.length / cols;
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let c = 0; c < cols; c++) {
      const a = out[r * cols + c] as number;
      const b = exact[r * cols + c] as number;
      num += (a - b) ** 2;
      den += b * b;
      maxAbs = Math.max(maxAbs, Math.abs(a - b));
      dot += a * b;
      na += a * a;
      nb += b * b;
    }
    cos += na === 0 || nb === 0 ? (na === nb ? 0 : 1) : 1 - dot / Math.sqrt(na * nb);
  }
  return { relative: Math.sqrt(num / den), cosine: cos / rows, maxAbs };
}

/**
 * Structured synthetic attention inputs `[batch, heads, seq, headDim]`: the sequence is cut into
 * segments of 64 tokens, each drawn from one of 16 seeded topics; keys sit near their segment's
 * topic direction, each query near the topic of its own segment or (half the time) of a random
 * earlier segment, so attention is peaked on a few blocks anywhere in the past — the regime
 * content-based selection and compression are built for. Values are seeded noise.
 */
export function structuredInputs(
  shape: { batch?: number; headsQ: number; headsKV?: number; seq: number; headDim: number },
  seed = 0,
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const B = shape.batch ?? 1;
  const H = shape.headsQ;
  const HK = shape.headsKV ?? H;
  const { seq: N, headDim: D } = shape;
  const topics = 16;
  const seg = 64;
  const nSeg = Math.ceil(N / seg);
  const amp = 2.2 / Math.sqrt(D) ** 0.5; // same-topic scores of a few units after 1/√D
  const dirs = seededUniform(topics * D, seed, 201, Math.sqrt(3));
  const topicOf = (s: number): number => Math.floor(hashUnit([seed, 202, s]) * topics);
  const noise = (n: number, stream: number) => seededUniform(n, seed, stream, 0.5);
  const k = noise(B * HK * N * D, 203);
  const q = noise(B * H * N * D, 204);
  const v = seededUniform(B * HK * N * D, seed, 205, 1);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < HK; h++) {
      for (let n = 0; n < N; n++) {
        const t = topicOf(Math.floor(n / seg));
        const row = ((b * HK + h) * N + n) * D;
        for (let d = 0; d < D; d++)
          k[row + d] = (k[row + d] as number) + amp * (dirs[t * D + d] as number);
      }
    }
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const own = Math.floor(n / seg);
        const pick = hashUnit([seed, 206, b, h, n]);
        const s = pick < 0.5 ? own : Math.floor(hashUnit([seed, 207, b, h, n]) * (own + 1));
        const t = topicOf(Math.min(s, nSeg - 1));
        const row = ((b * H + h) * N + n) * D;
        for (let d = 0; d < D; d++)
          q[row + d] = (q[row + d] as number) + amp * (dirs[t * D + d] as number);
      }
    }
  }
  return { q, k, v };
}
