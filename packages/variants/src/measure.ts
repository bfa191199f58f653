import type { System } from './system.js';

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
