/**
 * Multi-branch systems: several key/value sources (full, pooled, selected) attended separately
 * and merged, exactly by log-sum-exp where the branches see disjoint keys, or by learned gates.
 */
import { type CompressedStep, defineProgram, maskMod, SpecError } from '@tessera/core';
import {
  blockDiagonal,
  causal as causalMask,
  chunkedCausal,
  slidingWindow,
} from '@tessera/patterns';
import { exactSpec, kvRowsState, MERGE_NEAR_FAR } from './classic.js';
import {
  fitCentroids,
  initCentroids,
  initGates,
  initPoolWeights,
  positive,
  qkvShapes,
  type ResolvedShape,
  resolveShape,
  type System,
  type SystemShape,
  specOf,
} from './system.js';

/**
 * The far branch over block summaries `kp`/`vp` of blocks of `block` keys: attention of q to the
 * summaries into `c` (lse `lc`), causal like the shape, with the shape's softmax scale.
 */
function farBranch(
  s: ResolvedShape,
  block: number,
  extra: Partial<
    Pick<CompressedStep, 'selection' | 'selectionMode' | 'skipOwnBlock' | 'kernel'>
  > = {},
): CompressedStep {
  return {
    op: 'compressed',
    out: 'c',
    lse: 'lc',
    q: 'q',
    k: 'kp',
    v: 'vp',
    block,
    seqKV: s.seq,
    causal: s.causal,
    scale: 1 / Math.sqrt(s.headDim),
    ...extra,
  };
}

const ownBlock = (s: ResolvedShape, block: number) =>
  s.causal ? chunkedCausal(block) : blockDiagonal(block);

/** Candidates for selection: key blocks other than the query's own (earlier ones when causal). */
function otherBlocks(s: ResolvedShape, block: number) {
  return specOf(s, {
    mask: maskMod(
      ({ q, kv }) => (s.causal ? kv.lt(q.div(block).mul(block)) : kv.div(block).ne(q.div(block))),
      { name: s.causal ? `earlier-blocks(${block})` : `other-blocks(${block})` },
    ),
  });
}

function topKOf(
  where: string,
  opts: { topK?: number; fraction?: number },
  blocks: number,
  floor: number,
): number {
  if (opts.topK !== undefined) return positive(where, 'topK', opts.topK);
  const f = opts.fraction ?? 0.175;
  if (typeof f !== 'number' || !(f > 0 && f <= 1))
    throw new SpecError(`${where}: fraction must be in (0, 1] (got ${String(f)})`);
  return Math.max(floor, Math.round(f * blocks));
}

/**
 * Linearized Grouped Attention. With `grouping: 'learned'` (the default), tokens are grouped by a
 * learned similarity: each token is routed by its key to the nearest of `clusters` centroids
 * (`ck`: `[1, headsKV, clusters, headDim]`; seeded unit vectors from `initCentroids`, or fitted to
 * data with `calibrate` / `fitCentroids`), the tokens are ordered by cluster and position and cut
 * into groups of `group` tokens, `seq / group` groups (8–16× fewer than tokens for group 8–16);
 * query heads use their KV head's grouping. Attention is exact softmax to the keys of the token's
 * own group (earlier ones when causal, so at least its own key). Across groups each query attends
 * with the FAVOR+ kernel (`features` random features) to the other groups' summaries, a group's
 * summary being its kernel state Σ φ(k)vᵀ, Σ φ(k) over its (earlier) keys: computed as the whole
 * sequence's kernel attention minus the own group's (`subtract`). The two are merged by
 * log-sum-exp, whose weights the FAVOR+ lse (an estimate of softmax's) makes comparable:
 * hierarchical aggregation, exact inside the group. Every key counts once.
 *
 * With `grouping: 'consecutive'` ('linearized-grouped-consecutive'), groups are `group`
 * consecutive tokens, each summarised by a learned-weighted pooling of its keys and values, and
 * queries attend across to the (earlier, when causal) groups' summaries, each counted as its
 * group, by FAVOR+ or, with `across: 'softmax'` ('linearized-grouped-softmax'), by softmax.
 */
export function linearizedGrouped(
  shape: SystemShape,
  opts: {
    group: number;
    grouping?: 'learned' | 'consecutive';
    clusters?: number;
    centroids?: Float32Array;
    across?: 'linear' | 'softmax';
    features?: number;
    seed?: number;
  },
): System {
  const where = 'linearizedGrouped';
  const s = resolveShape(where, shape);
  const g = positive(where, 'group', opts?.group, s.seq);
  const grouping = opts.grouping ?? 'learned';
  if (grouping !== 'learned' && grouping !== 'consecutive')
    throw new SpecError(
      `${where}: grouping must be 'learned' or 'consecutive' (got ${JSON.stringify(grouping)})`,
    );
  const across = opts.across ?? 'linear';
  if (across !== 'linear' && across !== 'softmax')
    throw new SpecError(
      `${where}: across must be 'linear' or 'softmax' (got ${JSON.stringify(across)})`,
    );
  const features = positive(where, 'features', opts.features ?? 256);
  const seed = opts.seed ?? 0;
  if (grouping === 'learned') {
    if (across !== 'linear')
      throw new SpecError(
        `${where}: learned grouping attends across groups with the kernel (across 'linear'); softmax across is the consecutive grouping's`,
      );
    return learnedGrouped(s, g, features, seed, opts);
  }
  const program = defineProgram({
    inputs: { ...qkvShapes(s), wk: [1, s.headsKV, 1, g], wv: [1, s.headsKV, 1, g] },
    steps: [
      {
        op: 'attend',
        out: 'a',
        lse: 'la',
        spec: specOf(s, { mask: ownBlock(s, g) }),
        q: 'q',
        k: 'k',
        v: 'v',
      },
      { op: 'pool', out: 'kp', x: 'k', block: g, weights: 'wk' },
      { op: 'pool', out: 'vp', x: 'v', block: g, weights: 'wv' },
      farBranch(s, g, {
        skipOwnBlock: !s.causal,
        ...(across === 'linear'
          ? { kernel: { featureMap: 'favor+', features, seed: seed + 2 } }
          : {}),
      }),
      MERGE_NEAR_FAR,
    ],
    outputs: ['out'],
  });
  return {
    name: across === 'linear' ? 'linearized-grouped-consecutive' : 'linearized-grouped-softmax',
    shape: s,
    program,
    weights: {
      wk: initPoolWeights(s.headsKV, g, seed),
      wv: initPoolWeights(s.headsKV, g, seed + 1),
    },
    exact: exactSpec(s),
    // A decoder keeps its current group's keys and values plus one summary per earlier group.
    kvState: 2 * s.headsKV * (g + Math.ceil(s.seq / g)) * s.headDim,
  };
}

/** Linearized Grouped Attention with learned (routed) groups; see linearizedGrouped. */
function learnedGrouped(
  s: ResolvedShape,
  g: number,
  features: number,
  seed: number,
  opts: { clusters?: number; centroids?: Float32Array },
): System {
  const where = 'linearizedGrouped';
  const C = positive(where, 'clusters', opts.clusters ?? 8);
  const { headsKV: HK, headDim: D } = s;
  const given = opts.centroids;
  if (given !== undefined && (!(given instanceof Float32Array) || given.length !== HK * C * D))
    throw new SpecError(
      `${where}: centroids must be a Float32Array of [1, ${HK}, ${C}, ${D}] = ${HK * C * D} values`,
    );
  const exact = exactSpec(s);
  const kernelSpec = specOf(s, {
    ...(s.causal ? { mask: causalMask() } : {}),
    kernel: { type: 'linear', featureMap: 'favor+', features, seed: seed + 2 },
  });
  const grouped = { groupQ: 'g', groupKV: 'g' } as const;
  const program = defineProgram({
    inputs: { ...qkvShapes(s), ck: [1, HK, C, D] },
    steps: [
      { op: 'group', out: 'g', x: 'k', centroids: 'ck', size: g },
      // The kernel branch first: its whole and part die at the subtraction, before the exact one.
      { op: 'attend', out: 'w', lse: 'lw', spec: kernelSpec, q: 'q', k: 'k', v: 'v' },
      { op: 'attend', out: 'p', lse: 'lp', spec: kernelSpec, q: 'q', k: 'k', v: 'v', ...grouped },
      {
        op: 'subtract',
        out: 'c',
        lse: 'lc',
        whole: { out: 'w', lse: 'lw' },
        part: { out: 'p', lse: 'lp' },
      },
      { op: 'attend', out: 'a', lse: 'la', spec: exact, q: 'q', k: 'k', v: 'v', ...grouped },
      MERGE_NEAR_FAR,
    ],
    outputs: ['out'],
  });
  return {
    name: 'linearized-grouped',
    shape: s,
    program,
    weights: { ck: given ?? initCentroids(HK, C, D, seed) },
    exact,
    // Any earlier key can share a later token's group, so a decoder keeps every key and value,
    // plus the kernel state (features × (headDim + 1) per KV head).
    kvState: kvRowsState(s, s.seq) + HK * features * (D + 1),
    // Fitted to batch element 0's keys, the vectors the tokens are routed by.
    calibrate: ({ k }) => ({
      ck: fitCentroids([k.subarray(0, HK * s.seq * D)], HK, C, D, { seed }),
    }),
  };
}

/**
 * Compact Grouped Attention: each group of query heads (headsQ / headsKV of them) shares one
 * compressed KV, a learned-weighted pooling of blocks of `block` keys, computed once by the
 * system's `shared` program and reusable by later layers (cross-layer sharing). Each query block
 * keeps only the `topK` most informative summaries (largest pooled-query · summary score) and
 * attends exactly to its own block; the two are merged by log-sum-exp.
 */
export function compactGrouped(
  shape: SystemShape,
  opts: { block: number; topK?: number; fraction?: number; seed?: number },
): System {
  const where = 'compactGrouped';
  const s = resolveShape(where, shape);
  const block = positive(where, 'block', opts?.block, s.seq);
  const nb = Math.ceil(s.seq / block);
  const topK = topKOf(where, opts, nb, 1);
  const cand = otherBlocks(s, block);
  const summaries: [number, number, number, number] = [s.batch, s.headsKV, nb, s.headDim];
  const shared = defineProgram({
    inputs: {
      k: qkvShapes(s).k,
      v: qkvShapes(s).v,
      wk: [1, s.headsKV, 1, block],
      wv: [1, s.headsKV, 1, block],
    },
    steps: [
      { op: 'pool', out: 'kp', x: 'k', block, weights: 'wk' },
      { op: 'pool', out: 'vp', x: 'v', block, weights: 'wv' },
    ],
    outputs: ['kp', 'vp'],
  });
  const program = defineProgram({
    inputs: { ...qkvShapes(s), kp: summaries, vp: summaries },
    steps: [
      {
        op: 'attend',
        out: 'a',
        lse: 'la',
        spec: specOf(s, { mask: ownBlock(s, block) }),
        q: 'q',
        k: 'k',
        v: 'v',
      },
      { op: 'pool', out: 'qp', x: 'q', block },
      {
        op: 'select',
        out: 'sel',
        q: 'qp',
        k: 'kp',
        spec: cand,
        blockQ: block,
        blockKV: block,
        topK,
        local: 0,
      },
      farBranch(s, block, { selection: 'sel', selectionMode: 'only' }),
      MERGE_NEAR_FAR,
    ],
    outputs: ['out'],
  });
  const seed = opts.seed ?? 0;
  return {
    name: 'compact-grouped',
    shape: s,
    program,
    shared,
    weights: {
      wk: initPoolWeights(s.headsKV, block, seed),
      wv: initPoolWeights(s.headsKV, block, seed + 1),
    },
    exact: exactSpec(s),
    // The shared summaries plus the current block; one compression serves every layer sharing it.
    kvState: 2 * s.headsKV * (block + nb) * s.headDim,
  };
}

/**
 * Sparse Projected Attention: block summaries (the sequence projected to seq / block rows)
 * predict, per query block, the `topK` key blocks (default ≈17.5% of them) that get exact
 * attention, the query's own block always among them; every other block is approximated by its
 * mean-pooled summary (a rank-one stand-in for the block). The two are merged by log-sum-exp, so
 * selected keys are exact and each other key is counted once, through its summary.
 */
export function sparseProjected(
  shape: SystemShape,
  opts: { block: number; topK?: number; fraction?: number },
): System {
  const where = 'sparseProjected';
  const s = resolveShape(where, shape);
  const block = positive(where, 'block', opts?.block, s.seq);
  const nb = Math.ceil(s.seq / block);
  const topK = topKOf(where, opts, nb, 2);
  const spec = exactSpec(s);
  const program = defineProgram({
    inputs: qkvShapes(s),
    steps: [
      { op: 'pool', out: 'qp', x: 'q', block },
      { op: 'pool', out: 'kp', x: 'k', block },
      { op: 'pool', out: 'vp', x: 'v', block },
      {
        op: 'select',
        out: 'sel',
        q: 'qp',
        k: 'kp',
        spec,
        blockQ: block,
        blockKV: block,
        topK,
        local: 1,
      },
      { op: 'attend', out: 'a', lse: 'la', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
      farBranch(s, block, { selection: 'sel', selectionMode: 'exclude' }),
      MERGE_NEAR_FAR,
    ],
    outputs: ['out'],
  });
  return {
    name: 'sparse-projected',
    shape: s,
    program,
    weights: {},
    exact: spec,
    // Any block can be selected, so all keys and values stay, plus the summaries.
    kvState: kvRowsState(s, s.seq) + 2 * s.headsKV * nb * s.headDim,
  };
}

/**
 * Native-sparse style attention: three branches over the same queries — compressed (learned-
 * weighted summaries of blocks of `block` keys, earlier blocks when causal), selected (exact
 * attention to the `topK` blocks the summaries score highest, the query's own block forced) and a
 * sliding window of `window` keys — combined by per-token, per-head sigmoid gates computed from
 * the query (`gw`: `[1, 3, headsQ, headDim]`, `gb`: `[1, 1, 3, headsQ]`).
 */
export function nativeSparse(
  shape: SystemShape,
  opts: { block: number; topK: number; window: number; seed?: number },
): System {
  const where = 'nativeSparse';
  const s = resolveShape(where, shape);
  const block = positive(where, 'block', opts?.block, s.seq);
  const topK = positive(where, 'topK', opts.topK);
  const window = positive(where, 'window', opts.window, s.seq);
  if (topK < 2)
    throw new SpecError(
      `${where}: topK must be at least 2 (the own block is forced) (got ${topK})`,
    );
  const spec = exactSpec(s);
  const program = defineProgram({
    inputs: {
      ...qkvShapes(s),
      wk: [1, s.headsKV, 1, block],
      wv: [1, s.headsKV, 1, block],
      gw: [1, 3, s.headsQ, s.headDim],
      gb: [1, 1, 3, s.headsQ],
    },
    steps: [
      { op: 'pool', out: 'kp', x: 'k', block, weights: 'wk' },
      { op: 'pool', out: 'vp', x: 'v', block, weights: 'wv' },
      farBranch(s, block),
      { op: 'pool', out: 'qp', x: 'q', block },
      {
        op: 'select',
        out: 'sel',
        q: 'qp',
        k: 'kp',
        spec,
        blockQ: block,
        blockKV: block,
        topK,
        local: 1,
      },
      { op: 'attend', out: 'sl', spec, q: 'q', k: 'k', v: 'v', selection: 'sel' },
      {
        op: 'attend',
        out: 'w',
        spec: specOf(s, { mask: slidingWindow(window, { causal: s.causal }) }),
        q: 'q',
        k: 'k',
        v: 'v',
      },
      { op: 'gate', out: 'out', x: 'q', weight: 'gw', bias: 'gb', branches: ['c', 'sl', 'w'] },
    ],
    outputs: ['out'],
  });
  const seed = opts.seed ?? 0;
  const gates = initGates(3, s.headsQ, s.headDim, seed + 2);
  return {
    name: 'native-sparse',
    shape: s,
    program,
    weights: {
      wk: initPoolWeights(s.headsKV, block, seed),
      wv: initPoolWeights(s.headsKV, block, seed + 1),
      gw: gates.weight,
      gb: gates.bias,
    },
    exact: spec,
    kvState: kvRowsState(s, s.seq) + 2 * s.headsKV * Math.ceil(s.seq / block) * s.headDim,
  };
}
