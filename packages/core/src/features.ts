/**
 * @module
 * Linear (kernelised) attention: the feature maps every backend evaluates, and the random
 * feature matrix they share.
 *
 * Notation: `s` is `spec.scale`, σ = √|s|, D = headDim, m = kernel.features, W the m × D matrix
 * of `randomFeatureMatrix(kernel, D)` (row w_r). Query row q_i and key row k_j (after rounding to
 * the spec's dtype) enter the feature map as
 *
 *     x_i = sign(s) · σ · q_i        y_j = σ · k_j          (so x_i · y_j = s · q_i · k_j)
 *
 * Feature maps φ: R^D → R^F (F = featureDim(spec)):
 * - `elu+1`   F = D:  φ(x)_c = x_c + 1 if x_c > 0, else exp(x_c)
 * - `relu`    F = D:  φ(x)_c = max(x_c, 0)
 * - `favor+`  F = m:  φ(x)_r = exp(w_r · x − |x|²/2) / √m   (Performer's positive random
 *   features; E[φ(x) · φ(y)] = exp(x · y), the softmax kernel)
 * - `trig-rf` F = 2m: φ(x)_r = exp(|x|²/2) · sin(w_r · x) / √m and
 *   φ(x)_{m+r} = exp(|x|²/2) · cos(w_r · x) / √m   (Performer's trigonometric features; also
 *   E = exp(x · y), but single products and sums may be negative)
 *
 * Attention: with K_ij = φ(x_i) · φ(y_j) and J_i the keys row i sees (every j < seqKV; with the
 * causal mask `q >= kv`, only j ≤ i):
 *
 *     den_i = Σ_{j∈J_i} K_ij      num_i = Σ_{j∈J_i} K_ij · v_j
 *     den_i > 0:  out_i = num_i / den_i,  lse_i = ln(den_i)
 *     otherwise:  out_i = 0,              lse_i = -Infinity
 *
 * So lse is the natural log of the kernel normaliser; for favor+ and trig-rf it estimates the
 * softmax lse ln Σ exp(s · q_i · k_j). It is never NaN: a normaliser that is zero (relu features
 * that never overlap, an empty J_i) or negative (a trig-rf estimate gone wrong) gives the
 * "no attention mass" row, exactly like a fully masked softmax row.
 *
 * Stabilisers: exp(w · x − |x|²/2) and exp(|x|²/2) overflow f32 for moderate inputs, so backends
 * compute stabilised features φ̃ = φ · exp(−c), with c_q constant over a query row's features and
 * c_k constant over the keys that row sums; both cancel in num/den, and lse adds them back:
 * lse_i = ln(Σ_{j∈J_i} φ̃(x_i) · φ̃(y_j)) + c_q(i) + c_k. The CPU reference uses, for favor+,
 * c_q(i) = max_r (w_r · x_i) − |x_i|²/2 and c_k = max_{j,r} (w_r · y_j − |y_j|²/2); for trig-rf,
 * c_q(i) = |x_i|²/2 and c_k = max_j |y_j|²/2, the key maximum taken as a running maximum over
 * the keys summed so far (its sums are rescaled when it grows; for a non-causal kernel it ends
 * as the maximum over all keys of the (batch, KV head)). elu+1 and relu need none (c = 0).
 */
import { SpecError } from './errors.js';
import { hashUnit } from './expr/hash32.js';
import type { FeatureMap } from './spec.js';

/**
 * How `spec.scale` enters a linear kernel: the feature maps see x = query · q and y = key · k
 * (query = sign(scale)·√|scale|, key = √|scale|), so that x · y = scale · q · k.
 */
export function linearInputScales(scale: number): { readonly query: number; readonly key: number } {
  const root = Math.sqrt(Math.abs(scale));
  return { query: Math.sign(scale) * root, key: root };
}

/** Hash streams of randomFeatureMatrix: Gaussian entries, and the chi norms of favor+ rows. */
const STREAM_ENTRIES = 0;
const STREAM_NORMS = 1;

/**
 * A standard normal deviate as a pure function of its counters (Box–Muller, cosine branch):
 * u = hashUnit([seed, 2·stream, row, col]), v = hashUnit([seed, 2·stream + 1, row, col]),
 * g = √(−2 ln(1 − u)) · cos(2π v). 1 − u lies in [2^-24, 1], so g is finite (|g| < 5.8).
 */
export function gaussianAt(seed: number, stream: number, row: number, col: number): number {
  const u = hashUnit([seed, 2 * stream, row, col]);
  const v = hashUnit([seed, 2 * stream + 1, row, col]);
  return Math.sqrt(-2 * Math.log(1 - u)) * Math.cos(2 * Math.PI * v);
}

/**
 * The m × D random feature matrix of a linear kernel (row-major, m = kernel.features), identical
 * on every backend because it is a pure function of (featureMap, features, seed, headDim).
 * Entry (r, c) starts as gaussianAt(seed, 0, r, c).
 * - `trig-rf`: those i.i.d. Gaussians.
 * - `favor+`: positive orthogonal random features. Rows are taken in blocks of D (the last block
 *   may be shorter); each block is orthonormalised by modified Gram–Schmidt in f64 (two passes),
 *   then row r is rescaled to the norm √(Σ_{c<D} gaussianAt(seed, 1, r, c)²), an independent
 *   chi(D) variable, so each row is marginally Gaussian while rows in a block stay orthogonal.
 * The values are rounded to f32 once, here, so every backend multiplies by the same numbers.
 * How the features are used (feature maps, scale, stabilisers, lse): the comment atop this file.
 */
export function randomFeatureMatrix(
  kernel: { readonly featureMap: FeatureMap; readonly features: number; readonly seed: number },
  headDim: number,
): Float32Array {
  const { featureMap, features: m, seed } = kernel;
  if (featureMap !== 'favor+' && featureMap !== 'trig-rf') {
    throw new SpecError(
      `feature map '${String(featureMap)}' has no random features (only 'favor+' and 'trig-rf' do)`,
    );
  }
  if (!Number.isInteger(m) || m <= 0 || m > 1 << 20) {
    throw new SpecError(`kernel.features must be an integer in [1, 2^20] (got ${String(m)})`);
  }
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim > 1 << 16) {
    throw new SpecError(`headDim must be an integer in [1, 2^16] (got ${String(headDim)})`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new SpecError(`kernel.seed must be an integer in [0, 2^32) (got ${String(seed)})`);
  }
  const D = headDim;
  const w = new Float64Array(m * D);
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < D; c++) w[r * D + c] = gaussianAt(seed, STREAM_ENTRIES, r, c);
  }
  if (featureMap === 'favor+') {
    for (let r0 = 0; r0 < m; r0 += D) orthonormaliseRows(w, D, r0, Math.min(m, r0 + D), seed);
    for (let r = 0; r < m; r++) {
      let sq = 0;
      for (let c = 0; c < D; c++) sq += gaussianAt(seed, STREAM_NORMS, r, c) ** 2;
      const norm = Math.sqrt(sq);
      for (let c = 0; c < D; c++) w[r * D + c] *= norm;
    }
  }
  return Float32Array.from(w);
}

/** Modified Gram–Schmidt over rows r0..r1-1 of a row-major matrix with `cols` columns, in place. */
function orthonormaliseRows(
  w: Float64Array,
  cols: number,
  r0: number,
  r1: number,
  seed: number,
): void {
  for (let r = r0; r < r1; r++) {
    const o = r * cols;
    const initial = rowNorm(w, o, cols);
    for (let pass = 0; pass < 2; pass++) {
      for (let p = r0; p < r; p++) {
        const po = p * cols;
        let dot = 0;
        for (let c = 0; c < cols; c++) dot += w[o + c] * w[po + c];
        for (let c = 0; c < cols; c++) w[o + c] -= dot * w[po + c];
      }
    }
    const norm = rowNorm(w, o, cols);
    // Gaussian rows are independent with probability 1; 24-bit hash uniforms keep it so in practice.
    if (!(norm > 1e-9 * initial)) {
      throw new SpecError(
        `random features (seed ${seed}): row ${r} is linearly dependent on its block; choose another seed`,
      );
    }
    for (let c = 0; c < cols; c++) w[o + c] /= norm;
  }
}

function rowNorm(w: Float64Array, o: number, cols: number): number {
  let sq = 0;
  for (let c = 0; c < cols; c++) sq += w[o + c] ** 2;
  return Math.sqrt(sq);
}
