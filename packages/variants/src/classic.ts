/**
 * The classic systems, each a documented builder returning a System (a program plus weights).
 * Masks come from @tessera/patterns; learned parts are program inputs with `init*` defaults.
 */
import {
  type AttentionSpec,
  defineProgram,
  type Expr,
  lit,
  type Mask,
  maskMod,
  type ProgramStep,
  SpecError,
  scoreMod,
  where,
} from '@tessera/core';
import {
  bigBird as bigBirdMask,
  blockDiagonal,
  causal as causalMask,
  chunkedCausal,
  intersect,
  longformer as longformerMask,
  slidingWindow,
  strided,
  union,
} from '@tessera/patterns';
import {
  initDense,
  initProjection,
  positive,
  qkvShapes,
  type ResolvedShape,
  resolveShape,
  type System,
  type SystemShape,
  seededUniform,
  specOf,
} from './system.js';

/** The exact log-sum-exp merge of a near branch (`a`, `la`) and a far one (`c`, `lc`) into `out`. */
export const MERGE_NEAR_FAR: ProgramStep = Object.freeze({
  op: 'merge',
  out: 'out',
  branches: [
    { out: 'a', lse: 'la' },
    { out: 'c', lse: 'lc' },
  ],
});

/** Exact attention of a shape (causal or full): the baseline every system is measured against. */
export function exactSpec(s: ResolvedShape): AttentionSpec {
  return specOf(s, s.causal ? { mask: causalMask() } : {});
}

/** A system that is one attention call with a mask (and maybe a kernel). */
function single(name: string, s: ResolvedShape, spec: AttentionSpec, kvRows = s.seq): System {
  const program = defineProgram({
    inputs: qkvShapes(s),
    steps: [{ op: 'attend', out: 'out', spec, q: 'q', k: 'k', v: 'v' }],
    outputs: ['out'],
  });
  return {
    name,
    shape: s,
    program,
    weights: {},
    exact: exactSpec(s),
    kvState: kvRowsState(s, kvRows),
  };
}

/** The decode state of keeping `rows` key and value rows per KV head. */
export function kvRowsState(s: ResolvedShape, rows: number): number {
  return 2 * s.headsKV * Math.min(rows, s.seq) * s.headDim;
}

const withCausal = (s: ResolvedShape, m: Mask): Mask => (s.causal ? intersect(m, causalMask()) : m);

/** Exact attention (dense or causal) as a system: the baseline row of every table. */
export function exact(shape: SystemShape): System {
  const s = resolveShape('exact', shape);
  return single('exact', s, exactSpec(s));
}

/**
 * Multi-query / grouped-query attention: `kvHeads` key/value heads shared by groups of query
 * heads (1 = MQA). The KV cache shrinks by headsQ / kvHeads; the attention is exact.
 */
export function groupedQuery(shape: SystemShape, opts: { kvHeads: number }): System {
  const s0 = resolveShape('groupedQuery', shape);
  const kvHeads = positive('groupedQuery', 'kvHeads', opts?.kvHeads, s0.headsQ);
  if (s0.headsQ % kvHeads !== 0)
    throw new SpecError(`groupedQuery: kvHeads (${kvHeads}) must divide headsQ (${s0.headsQ})`);
  const s = { ...s0, headsKV: kvHeads };
  return single(kvHeads === 1 ? 'mqa' : `gqa-${kvHeads}`, s, exactSpec(s));
}

/** Longformer: a sliding window of `window` keys plus `global` leading global tokens. */
export function longformer(shape: SystemShape, opts: { window: number; global?: number }): System {
  const s = resolveShape('longformer', shape);
  const window = positive('longformer', 'window', opts?.window);
  const global = opts?.global ?? 0;
  const mask = longformerMask({
    window,
    causal: s.causal,
    ...(global > 0 ? { global: positive('longformer', 'global', global, s.seq) } : {}),
  });
  // The pattern's global rows see every key; an autoregressive model must not, so intersect.
  const kvRows = s.causal ? window + global : s.seq; // a decoder keeps the window and the globals
  return single('longformer', s, specOf(s, { mask: withCausal(s, mask) }), kvRows);
}

/**
 * BigBird (ITC): sliding blocks, global blocks and random blocks, decided per block of `block`
 * tokens; intersected with causal when the shape is causal.
 */
export function bigBird(
  shape: SystemShape,
  opts: {
    block: number;
    window?: number;
    globalBlocks?: number;
    randomBlocks?: number;
    seed?: number;
  },
): System {
  const s = resolveShape('bigBird', shape);
  const block = positive('bigBird', 'block', opts?.block);
  const mask = bigBirdMask({
    block,
    window: opts.window ?? 3,
    globalBlocks: opts.globalBlocks ?? 1,
    randomBlocks: opts.randomBlocks ?? 2,
    seed: opts.seed ?? 0,
    seqKV: s.seq,
  });
  return single('bigbird', s, specOf(s, { mask: withCausal(s, mask) }));
}

/**
 * Sparse Transformer. 'strided': the previous `stride` keys plus every stride-th key before them.
 * 'fixed': the keys of the query's own chunk of `stride`, plus the last `summary` keys of every
 * chunk (the "summary" columns).
 */
export function sparseTransformer(
  shape: SystemShape,
  opts: { mode: 'strided' | 'fixed'; stride: number; summary?: number },
): System {
  const s = resolveShape('sparseTransformer', shape);
  const stride = positive('sparseTransformer', 'stride', opts?.stride);
  if (opts.mode === 'strided')
    return single(
      'sparse-transformer-strided',
      s,
      specOf(s, { mask: strided(stride, { causal: s.causal }) }),
      s.causal ? stride + Math.ceil(s.seq / stride) : s.seq,
    );
  if (opts.mode !== 'fixed')
    throw new SpecError(
      `sparseTransformer: mode must be 'strided' or 'fixed' (got ${JSON.stringify(opts.mode)})`,
    );
  const c = positive('sparseTransformer', 'summary', opts.summary ?? 1, stride);
  const summary = maskMod(({ kv }) => kv.mod(stride).ge(stride - c), {
    name: `summary-columns(${stride}, ${c})`,
  });
  const local = s.causal ? chunkedCausal(stride) : blockDiagonal(stride);
  return single(
    'sparse-transformer-fixed',
    s,
    specOf(s, { mask: union(local, withCausal(s, summary)) }),
    s.causal ? stride + c * Math.ceil(s.seq / stride) : s.seq,
  );
}

/** Performer: FAVOR+ positive random features (`features` of them), causal by prefix sums. */
export function performer(
  shape: SystemShape,
  opts: { features?: number; seed?: number } = {},
): System {
  const s = resolveShape('performer', shape);
  const spec = specOf(s, {
    ...(s.causal ? { mask: causalMask() } : {}),
    kernel: {
      type: 'linear',
      featureMap: 'favor+',
      features: opts.features ?? 256,
      seed: opts.seed ?? 0,
    },
  });
  // The decoder keeps Σ φ(k)vᵀ (features × headDim) and Σ φ(k) per KV head.
  const features = opts.features ?? 256;
  return { ...single('performer', s, spec), kvState: s.headsKV * features * (s.headDim + 1) };
}

/**
 * Linformer: keys and values projected along the sequence by E and F (`[1, 1, rank, seq]`), then
 * exact attention to the `rank` projected keys. Bidirectional only: the projection mixes future
 * keys into every row.
 */
export function linformer(
  shape: SystemShape,
  opts: { rank: number; E?: Float32Array; F?: Float32Array; seed?: number },
): System {
  const s = resolveShape('linformer', shape);
  if (s.causal)
    throw new SpecError(
      'linformer: causal shapes are not supported (the projection mixes future keys); pass causal: false',
    );
  const rank = positive('linformer', 'rank', opts?.rank, s.seq);
  const spec = specOf(s, { seqKV: rank });
  const program = defineProgram({
    inputs: { ...qkvShapes(s), E: [1, 1, rank, s.seq], F: [1, 1, rank, s.seq] },
    steps: [
      { op: 'project', out: 'kr', x: 'k', matrix: 'E' },
      { op: 'project', out: 'vr', x: 'v', matrix: 'F' },
      { op: 'attend', out: 'out', spec, q: 'q', k: 'kr', v: 'vr' },
    ],
    outputs: ['out'],
  });
  const seed = opts.seed ?? 0;
  return {
    name: 'linformer',
    shape: s,
    program,
    weights: {
      E: opts.E ?? initProjection(rank, s.seq, seed),
      F: opts.F ?? initProjection(rank, s.seq, seed + 1),
    },
    exact: exactSpec(s),
    kvState: kvRowsState(s, rank),
  };
}

/**
 * Synthesizer (multi-head, headsKV = headsQ). 'dense': scores `relu(q·W1 + b1) · W2[:, kv]`
 * (W1: `[1, H, D, hidden]`, W2 stored as keys `[batch, H, seq, hidden]`). 'random' (factorised):
 * scores `R1[q] · R2[kv]` (`[batch, H, seq, rank]` each), independent of the input.
 */
export function synthesizer(
  shape: SystemShape,
  opts: { mode: 'dense' | 'random'; hidden?: number; rank?: number; seed?: number },
): System {
  const s = resolveShape('synthesizer', shape);
  if (s.headsKV !== s.headsQ)
    throw new SpecError(`synthesizer: needs headsKV = headsQ (got ${s.headsKV} and ${s.headsQ})`);
  const seed = opts?.seed ?? 0;
  const mask = s.causal ? { mask: causalMask() } : {};
  const { q, v } = qkvShapes(s);
  if (opts.mode === 'dense') {
    const hidden = positive('synthesizer', 'hidden', opts.hidden ?? s.headDim);
    const spec = specOf(s, { ...mask, headDim: hidden, headDimV: s.headDim, scale: 1 });
    const w1 = initDense(s.headsQ, s.headDim, hidden, seed);
    const w2 = seededUniform(s.batch * s.headsQ * s.seq * hidden, seed, 105, Math.sqrt(3 / hidden));
    tileBatches(w2, s.batch);
    const program = defineProgram({
      inputs: {
        q,
        v,
        W1: [1, s.headsQ, s.headDim, hidden],
        b1: [1, s.headsQ, 1, hidden],
        W2: [s.batch, s.headsQ, s.seq, hidden],
      },
      steps: [
        { op: 'dense', out: 'h', x: 'q', weight: 'W1', bias: 'b1', activation: 'relu' },
        { op: 'attend', out: 'out', spec, q: 'h', k: 'W2', v: 'v' },
      ],
      outputs: ['out'],
    });
    return {
      name: 'synthesizer-dense',
      shape: s,
      program,
      weights: { W1: w1.weight, b1: w1.bias, W2: w2 },
      exact: exactSpec(s),
      kvState: kvRowsState(s, s.seq) / 2, // values only: the scores need no keys
    };
  }
  if (opts.mode !== 'random')
    throw new SpecError(
      `synthesizer: mode must be 'dense' or 'random' (got ${JSON.stringify(opts.mode)})`,
    );
  const rank = positive('synthesizer', 'rank', opts.rank ?? 8);
  const spec = specOf(s, { ...mask, headDim: rank, headDimV: s.headDim, scale: 1 });
  const r1 = seededUniform(s.batch * s.headsQ * s.seq * rank, seed, 106, 1);
  const r2 = seededUniform(s.batch * s.headsQ * s.seq * rank, seed, 107, 1);
  tileBatches(r1, s.batch);
  tileBatches(r2, s.batch);
  const program = defineProgram({
    inputs: { v, R1: [s.batch, s.headsQ, s.seq, rank], R2: [s.batch, s.headsQ, s.seq, rank] },
    steps: [{ op: 'attend', out: 'out', spec, q: 'R1', k: 'R2', v: 'v' }],
    outputs: ['out'],
  });
  return {
    name: 'synthesizer-random',
    shape: s,
    program,
    weights: { R1: r1, R2: r2 },
    exact: exactSpec(s),
    kvState: kvRowsState(s, s.seq) / 2, // values only
  };
}

/** Copies batch 0 of a [batch, ...] array into the other batches (weights shared by batches). */
function tileBatches(x: Float32Array, batch: number): void {
  const n = x.length / batch;
  for (let b = 1; b < batch; b++) x.copyWithin(b * n, 0, n);
}

/**
 * Score bias so that summary `kv` of a `block`-pooled sequence stands for its `n_kv` keys:
 * `score + ln n_kv` (only the last block can be short).
 */
export function countBias(seq: number, block: number): ReturnType<typeof scoreMod> {
  const nb = Math.ceil(seq / block);
  const last = seq - (nb - 1) * block;
  return scoreMod(
    ({ score, kv }) => score.add(where(kv.eq(nb - 1), lit(Math.log(last)), lit(Math.log(block)))),
    { name: `count-bias(${block})` },
  );
}

/**
 * The steps of exact attention over block summaries: pools k and v into `kp`/`vp` (unless the
 * caller already did) and attends to the summaries `visible(q, kv)` allows, each counted n times.
 */
export function pooledBranch(
  s: ResolvedShape,
  block: number,
  visible: (q: Expr, kv: Expr) => Expr,
  name: string,
  out: { out: string; lse: string },
  kp = 'kp',
  vp = 'vp',
): ProgramStep {
  const nb = Math.ceil(s.seq / block);
  const spec = specOf(s, {
    seqKV: nb,
    mask: maskMod(({ q, kv }) => visible(q, kv), { name }),
    scoreMod: countBias(s.seq, block),
  });
  return { op: 'attend', out: out.out, lse: out.lse, spec, q: 'q', k: kp, v: vp };
}

/**
 * Attention pooling: exact attention to a window of `window` keys, plus every block of `block`
 * keys wholly outside the window as one mean-pooled summary (counted as its block), merged exactly
 * by log-sum-exp. Keys between the window and the last whole block are left out.
 */
export function attentionPooling(
  shape: SystemShape,
  opts: { block: number; window: number },
): System {
  const s = resolveShape('attentionPooling', shape);
  const block = positive('attentionPooling', 'block', opts?.block, s.seq);
  const window = positive('attentionPooling', 'window', opts?.window, s.seq);
  const half = Math.floor(window / 2);
  const local = s.causal
    ? slidingWindow(window, { causal: true })
    : slidingWindow(2 * half + 1, { causal: false });
  const visible = s.causal
    ? (q: Expr, kv: Expr) => kv.add(1).mul(block).add(window).le(q.add(1))
    : (q: Expr, kv: Expr) =>
        kv
          .add(1)
          .mul(block)
          .le(q.sub(half))
          .or(kv.mul(block).gt(q.add(half)));
  const program = defineProgram({
    inputs: qkvShapes(s),
    steps: [
      {
        op: 'attend',
        out: 'a',
        lse: 'la',
        spec: specOf(s, { mask: local }),
        q: 'q',
        k: 'k',
        v: 'v',
      },
      { op: 'pool', out: 'kp', x: 'k', block },
      { op: 'pool', out: 'vp', x: 'v', block },
      pooledBranch(s, block, visible, `outside-window(${window}, ${block})`, {
        out: 'c',
        lse: 'lc',
      }),
      MERGE_NEAR_FAR,
    ],
    outputs: ['out'],
  });
  const kvRows = s.causal ? window + Math.ceil(s.seq / block) : s.seq + Math.ceil(s.seq / block);
  return {
    name: 'attention-pooling',
    shape: s,
    program,
    weights: {},
    exact: exactSpec(s),
    kvState: kvRowsState(s, kvRows),
  };
}
