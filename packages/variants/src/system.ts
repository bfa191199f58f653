import {
  type AttentionSpec,
  type DeviceValue,
  defineAttention,
  InputError,
  type KernelConfig,
  type Mask,
  type Program,
  type ProgramBackend,
  type ProgramInput,
  runProgram,
  type ScoreMod,
  type Shape,
  SpecError,
} from '@tessera/core';
import { hashUnit, nearestCentroid } from '@tessera/core/backend';

/** The attention shape every system builder takes. */
export interface SystemShape {
  readonly batch?: number;
  readonly headsQ: number;
  /** Default headsQ (MHA); fewer for GQA, 1 for MQA. */
  readonly headsKV?: number;
  readonly seq: number;
  readonly headDim: number;
  /** Default true: token i sees keys 0..i. */
  readonly causal?: boolean;
}

export interface ResolvedShape {
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly seq: number;
  readonly headDim: number;
  readonly causal: boolean;
}

/**
 * A named attention system: a program over inputs `q`, `k`, `v` (bhsd, f32) plus learned weights.
 * `shared`, when present, is a compression computed once from a layer's k and v and reused by
 * `program` in every layer that shares it (its outputs are inputs of `program`).
 */
export interface System {
  readonly name: string;
  readonly shape: ResolvedShape;
  readonly program: Program;
  readonly shared?: Program;
  /** Learned parameters by input name, with the shapes the program declares. */
  readonly weights: Readonly<Record<string, Float32Array>>;
  /** Exact attention of the same shape and causality: what the system approximates. */
  readonly exact: AttentionSpec;
  /**
   * Numbers a decoder keeps per layer and batch element to produce the next token (keys and
   * values, or what replaces them: summaries, projections, feature-map state), all heads.
   * Exact attention keeps 2·headsKV·seq·headDim.
   */
  readonly kvState: number;
  /**
   * Fits the weights that are learned from the data's own statistics (a router's centroids) to
   * sample inputs of the system's shape; returns the replacements for `weights`.
   */
  readonly calibrate?: (qkv: {
    readonly q: Float32Array;
    readonly k: Float32Array;
  }) => Readonly<Record<string, Float32Array>>;
}

export function resolveShape(where: string, s: SystemShape): ResolvedShape {
  if (typeof s !== 'object' || s === null)
    throw new SpecError(
      `${where}: shape must be { headsQ, seq, headDim, headsKV?, batch?, causal? }`,
    );
  const int = (field: string, v: unknown): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      throw new SpecError(`${where}: ${field} must be a positive integer (got ${String(v)})`);
    return v;
  };
  const headsQ = int('headsQ', s.headsQ);
  const headsKV = int('headsKV', s.headsKV ?? headsQ);
  if (headsQ % headsKV !== 0)
    throw new SpecError(`${where}: headsQ (${headsQ}) must be a multiple of headsKV (${headsKV})`);
  if (s.causal !== undefined && typeof s.causal !== 'boolean')
    throw new SpecError(`${where}: causal must be a boolean`);
  return {
    batch: int('batch', s.batch ?? 1),
    headsQ,
    headsKV,
    seq: int('seq', s.seq),
    headDim: int('headDim', s.headDim),
    causal: s.causal ?? true,
  };
}

export function positive(where: string, field: string, v: unknown, max?: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || (max !== undefined && v > max))
    throw new SpecError(
      `${where}: ${field} must be a positive integer${max === undefined ? '' : ` ≤ ${max}`} (got ${String(v)})`,
    );
  return v;
}

/** The spec of a shape with an optional mask, score mod, kernel and other sizes. */
export function specOf(
  s: ResolvedShape,
  extra: {
    mask?: Mask;
    scoreMod?: ScoreMod;
    kernel?: KernelConfig;
    seqKV?: number;
    headDim?: number;
    headDimV?: number;
    headsKV?: number;
    scale?: number;
  } = {},
): AttentionSpec {
  return defineAttention({
    batch: s.batch,
    headsQ: s.headsQ,
    headsKV: extra.headsKV ?? s.headsKV,
    seqQ: s.seq,
    seqKV: extra.seqKV ?? s.seq,
    headDim: extra.headDim ?? s.headDim,
    headDimV: extra.headDimV ?? s.headDim,
    ...(extra.scale === undefined ? {} : { scale: extra.scale }),
    ...(extra.mask ? { mask: extra.mask } : {}),
    ...(extra.scoreMod ? { scoreMod: extra.scoreMod } : {}),
    ...(extra.kernel ? { kernel: extra.kernel } : {}),
  });
}

/** Input shapes of q, k, v for a shape. */
export function qkvShapes(s: ResolvedShape): Record<'q' | 'k' | 'v', Shape> {
  return {
    q: [s.batch, s.headsQ, s.seq, s.headDim],
    k: [s.batch, s.headsKV, s.seq, s.headDim],
    v: [s.batch, s.headsKV, s.seq, s.headDim],
  };
}

/** Seeded values, uniform in [-amp, amp): a pure function of (seed, stream, index). */
export function seededUniform(n: number, seed: number, stream: number, amp = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * (2 * hashUnit([seed, stream, i]) - 1);
  return out;
}

/**
 * Pooling logits `[1, heads, 1, block]` for learned-weighted pooling: small seeded values, so the
 * pooling starts near the mean and the weights have something to learn from.
 */
export function initPoolWeights(heads: number, block: number, seed = 0): Float32Array {
  return seededUniform(heads * block, seed, 101, 0.5);
}

/**
 * Linformer's E or F, `[1, 1, r, seq]`: row i averages segment i of the sequence (seq / r keys)
 * plus seeded noise of relative size `noise`, the usual starting point before training.
 */
export function initProjection(r: number, seq: number, seed = 0, noise = 0.1): Float32Array {
  const m = seededUniform(r * seq, seed, 102, noise / seq);
  for (let i = 0; i < r; i++) {
    const lo = Math.floor((i * seq) / r);
    const hi = Math.floor(((i + 1) * seq) / r);
    for (let n = lo; n < hi; n++) m[i * seq + n] = (m[i * seq + n] as number) + 1 / (hi - lo);
  }
  return m;
}

/**
 * Gate parameters for `branches` branches: weights `[1, branches, heads, cols]` (seeded, small)
 * and biases `[1, 1, branches, heads]` set so that every gate starts at 1 / branches.
 */
export function initGates(
  branches: number,
  heads: number,
  cols: number,
  seed = 0,
): { weight: Float32Array; bias: Float32Array } {
  const weight = seededUniform(branches * heads * cols, seed, 103, 0.02);
  const p = 1 / branches;
  const bias = new Float32Array(branches * heads).fill(Math.log(p / (1 - p)));
  if (branches === 1) bias.fill(0);
  return { weight, bias };
}

/** Token-wise projection weights `[1, heads, cols, out]` with Xavier-uniform scale, and zero bias. */
export function initDense(
  heads: number,
  cols: number,
  out: number,
  seed = 0,
): { weight: Float32Array; bias: Float32Array } {
  const amp = Math.sqrt(6 / (cols + out));
  return {
    weight: seededUniform(heads * cols * out, seed, 104, amp),
    bias: new Float32Array(heads * out),
  };
}

/**
 * Routing centroids `[1, heads, clusters, cols]` for a `group` step: seeded random unit vectors,
 * so a token's cluster is its direction's nearest centroid.
 */
export function initCentroids(
  heads: number,
  clusters: number,
  cols: number,
  seed = 0,
): Float32Array {
  const c = seededUniform(heads * clusters * cols, seed, 105);
  for (let r = 0; r < heads * clusters; r++) normalise(c, r * cols, cols);
  return c;
}

function normalise(x: Float32Array | Float64Array, off: number, n: number): void {
  let sq = 0;
  for (let d = 0; d < n; d++) sq += (x[off + d] as number) ** 2;
  const inv = sq > 0 ? 1 / Math.sqrt(sq) : 0;
  for (let d = 0; d < n; d++) x[off + d] = (x[off + d] as number) * inv;
}

/**
 * Fits routing centroids `[1, heads, clusters, cols]` to sample rows by spherical k-means (what an
 * online k-means router converges to): per head, unit centroids, each row assigned to the centroid
 * with the largest dot product (the `group` step's rule), each centroid moved to the normalised
 * mean of its rows, `iters` times. `samples` are `[1, heads, rows, cols]` tensors (e.g. one layer's
 * queries and keys); at most `maxRows` evenly spaced rows of each are used. Starts from
 * `initCentroids(heads, clusters, cols, seed)`; a centroid that loses all its rows keeps its place.
 */
export function fitCentroids(
  samples: readonly Float32Array[],
  heads: number,
  clusters: number,
  cols: number,
  opts: { iters?: number; seed?: number; maxRows?: number } = {},
): Float32Array {
  const c = initCentroids(heads, clusters, cols, opts.seed ?? 0);
  const iters = opts.iters ?? 10;
  const maxRows = opts.maxRows ?? 4096;
  const sum = new Float64Array(clusters * cols);
  const count = new Int32Array(clusters);
  for (let h = 0; h < heads; h++) {
    const rows: Float32Array[] = [];
    for (const x of samples) {
      const n = x.length / (heads * cols);
      if (!Number.isInteger(n))
        throw new SpecError(
          `fitCentroids: a sample of ${x.length} values is not [1, ${heads}, rows, ${cols}]`,
        );
      const step = Math.max(1, Math.floor(n / maxRows));
      for (let t = 0; t < n; t += step)
        rows.push(x.subarray((h * n + t) * cols, (h * n + t + 1) * cols));
    }
    const cent = c.subarray(h * clusters * cols, (h + 1) * clusters * cols);
    for (let it = 0; it < iters; it++) {
      sum.fill(0);
      count.fill(0);
      for (const r of rows) {
        const best = nearestCentroid(r, 0, cent, 0, clusters, cols);
        count[best]++;
        for (let d = 0; d < cols; d++)
          sum[best * cols + d] = (sum[best * cols + d] as number) + (r[d] as number);
      }
      for (let ci = 0; ci < clusters; ci++) {
        if (count[ci] === 0) continue;
        normalise(sum, ci * cols, cols);
        for (let d = 0; d < cols; d++) cent[ci * cols + d] = sum[ci * cols + d] as number;
      }
    }
  }
  return c;
}

export interface SystemRun {
  readonly out: Float32Array;
  /** Most bytes the program's values held at once (inputs, weights, intermediates, outputs). */
  readonly peakBytes: number;
}

/**
 * Runs a system on one layer's q, k, v (host arrays or DeviceValues). A system with a shared
 * compression computes it first; pass `shared` (from `compress`) to reuse one computed for another
 * layer, and `weights` to replace any of `system.weights` (e.g. by copies already on the device).
 */
export async function runSystem(
  backend: ProgramBackend,
  system: System,
  qkv: { readonly q: ProgramInput; readonly k: ProgramInput; readonly v: ProgramInput },
  shared?: Readonly<Record<string, DeviceValue>>,
  weights?: Readonly<Record<string, ProgramInput>>,
): Promise<SystemRun> {
  let own: Readonly<Record<string, DeviceValue>> | undefined;
  let peakShared = 0;
  if (system.shared && !shared) {
    const r = await compress(backend, system, qkv);
    own = r.values;
    peakShared = r.peakBytes;
  }
  try {
    const given: Record<string, ProgramInput> = {
      ...system.weights,
      ...(weights ?? {}),
      ...(shared ?? own ?? {}),
      ...qkv,
    };
    const inputs: Record<string, ProgramInput> = {};
    for (const name of Object.keys(system.program.inputs)) {
      const x = given[name];
      if (x === undefined)
        throw new InputError(`system '${system.name}': no value for input '${name}'`);
      inputs[name] = x;
    }
    const res = await runProgram(backend, system.program, inputs);
    const out = res.outputs.out;
    if (!out) throw new InputError(`system '${system.name}' has no output 'out'`);
    return { out, peakBytes: Math.max(peakShared, res.peakBytes) };
  } finally {
    if (own) for (const v of Object.values(own)) v.release();
  }
}

/** Runs a system's shared compression on k, v and keeps the result on the device. */
export async function compress(
  backend: ProgramBackend,
  system: System,
  kv: { readonly k: ProgramInput; readonly v: ProgramInput },
): Promise<{ values: Readonly<Record<string, DeviceValue>>; peakBytes: number }> {
  const p = system.shared;
  if (!p) throw new SpecError(`system '${system.name}' has no shared compression`);
  const inputs: Record<string, ProgramInput> = {};
  for (const name of Object.keys(p.inputs)) {
    if (name === 'k' || name === 'v') inputs[name] = kv[name];
    else {
      const w = system.weights[name];
      if (!w) throw new SpecError(`system '${system.name}': missing weight '${name}'`);
      inputs[name] = w;
    }
  }
  const res = await runProgram(backend, p, inputs, { keep: p.outputs });
  return { values: res.kept, peakBytes: res.peakBytes };
}
