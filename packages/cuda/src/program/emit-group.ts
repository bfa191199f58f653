/**
 * CUDA C++ for content grouping: `group` (route every row to its nearest centroid by dot product,
 * then a stable counting sort per (batch, head) into `rank` / `order`) and the grouped `attend`
 * (each query attends to the keys of its own group, softmax or a feature map).
 */
import { floatLiteral } from '../expr-cuda.js';
import { PROGRAM_THREADS, type ProgramKernel, programKernel, ptr } from './emit.js';

const WARPS = PROGRAM_THREADS / 32; // rows per block of the one-warp-per-row kernels

/** Most clusters the sort kernel's shared-memory histogram takes. */
export const GROUP_MAX_CLUSTERS = 8192;

/**
 * Route: one thread per row of x [B, H, N, D]; `cluster[row]` = argmax_c x·centroids[h, c]
 * (ties to the lower c: only a strictly larger score replaces the best). The scores are f64 sums,
 * in column order, of the exact f32 products, as the cpu reference computes them, so the clusters
 * agree with it exactly (no near-tie can flip).
 */
export function emitGroupRoute(
  shape: readonly [number, number, number, number],
  clusters: number,
): ProgramKernel {
  const [B, H, N, D] = shape;
  const rows = B * H * N;
  const body = `  const long long row = (long long)blockIdx.x * NTHREADS + threadIdx.x;  // (b, h, t)
  if (row >= ROWS) return;
  const int h = (int)((row / N) % H);
  const float* xr = p.x + row * D;
  const float* cb = p.centroids + (long long)h * C * D;
  double best = (double)TSR_NEG_INF;
  int bc = 0;
  for (int c = 0; c < C; ++c) {
    const float* cr = cb + (long long)c * D;
    double s = 0.0;
    for (int d = 0; d < D; ++d) s += (double)xr[d] * (double)cr[d];  // exact products
    if (s > best) { best = s; bc = c; }
  }
  p.cluster[row] = bc;`;
  return programKernel(
    'group: route rows to clusters',
    'tsr_group_route',
    [ptr('x'), ptr('centroids'), ptr('cluster', 'int*')],
    [
      `constexpr int B = ${B}, H = ${H}, N = ${N}, D = ${D}, C = ${clusters};`,
      `constexpr long long ROWS = ${rows}LL;`,
    ],
    body,
    rows,
  );
}

/**
 * Sort: one block per (batch, head) slice; a stable counting sort of the slice's rows by cluster.
 * A shared-memory histogram (atomic adds: the counts do not depend on their order), an exclusive
 * scan into each cluster's first place, then tiles of NTHREADS rows in row order: thread t takes
 * row tile·NTHREADS + t, whose place is its cluster's next place plus the rows of the same cluster
 * before it in the tile (counted from the tile's clusters in shared memory); after a barrier the
 * cluster's next place moves past the tile's rows. `rank[row]` = place, `order[place]` = row.
 * O(N · NTHREADS) comparisons per slice; deterministic.
 */
export function emitGroupSort(rows: number, clusters: number, slices: number): ProgramKernel {
  const body = `  extern __shared__ __align__(16) unsigned char tsr_smem[];
  int* next = (int*)tsr_smem;        // [C] per cluster: its count, then its next place
  int* tile = next + C;              // [NTHREADS] the clusters of the tile's rows (-1 past N)
  const int t = threadIdx.x;
  const long long base = (long long)blockIdx.x * N;
  const int* cl = p.cluster + base;
  for (int c = t; c < C; c += NTHREADS) next[c] = 0;
  __syncthreads();
  for (int r = t; r < N; r += NTHREADS) atomicAdd(&next[cl[r]], 1);
  __syncthreads();
  if (t == 0) {
    int run = 0;
    for (int c = 0; c < C; ++c) { const int n = next[c]; next[c] = run; run += n; }
  }
  __syncthreads();
  for (int r0 = 0; r0 < N; r0 += NTHREADS) {
    const int r = r0 + t;
    const int c = r < N ? cl[r] : -1;
    tile[t] = c;
    __syncthreads();
    if (r < N) {
      int before = 0;
      for (int u = 0; u < t; ++u) before += tile[u] == c ? 1 : 0;
      const int place = next[c] + before;
      p.rank[base + r] = place;
      p.order[base + place] = r;
    }
    __syncthreads();  // every place of this tile is read before the next places move
    if (r < N) atomicAdd(&next[c], 1);
    __syncthreads();
  }`;
  const k = programKernel(
    'group: stable counting sort per (batch, head)',
    'tsr_group_sort',
    [ptr('cluster', 'const int*'), ptr('rank', 'int*'), ptr('order', 'int*')],
    [`constexpr int N = ${rows}, C = ${clusters};`],
    body,
    slices,
    PROGRAM_THREADS,
  );
  return {
    ...k,
    entry: { ...k.entry, dynamicSharedBytes: 4 * (clusters + PROGRAM_THREADS) },
  };
}

/** The shapes and options a grouped attend kernel is specialised to. */
export interface GroupedAttendShape {
  readonly batch: number;
  readonly headsQ: number;
  readonly headsKV: number;
  readonly seqQ: number;
  readonly seqKV: number;
  readonly headDim: number;
  readonly headDimV: number;
  readonly causal: boolean;
  /**
   * Heads of the query grouping: `headsQ` (the default; each query head its own slice) or
   * `headsKV` (one grouping of the KV heads, e.g. of the keys: query head h reads the slice of its
   * KV head h / (headsQ / headsKV)).
   */
  readonly headsGroupQ?: number;
  /** Rows per group of the query and of the key grouping. */
  readonly sizeQ: number;
  readonly sizeKV: number;
  /** Softmax: the score scale. */
  readonly scale: number;
  /** A feature map: its feature count (the rows are the linear module's stabilised features). */
  readonly features: number | null;
  readonly featureMap?: string;
}

/**
 * Grouped attend: one warp per query row (b, h, i). Its group is g = ⌊rank_q[b, h, i] / SQ⌋ (or
 * ⌊rank_q[b, h / GROUP, i] / SQ⌋ when the query grouping covers the KV heads); it
 * walks places [g·SKV, min((g+1)·SKV, M)) of its KV head's key order 32 at a time: lane e takes
 * key j = order_kv[place], skipped when past the group or, causal, when j > i, and computes its
 * whole score (the dot product over D, or over the F stabilised features); the warp folds the
 * chunk into an online state (chunk maximum and sum by shuffles), then every lane adds the 32
 * weighted value rows for the output columns it owns (lane, lane + 32, ...), the chunk's weights
 * and keys shared through per-warp shared memory.
 * Softmax: scores scale·q·k_j; lse = ln Σ exp. Feature map: the weight of key j is
 * φ̃(q)·φ̃(k_j) e^{c_j} (signed weights allowed), kept relative to the running maximum key
 * stabiliser c, so den = Σ φ̃(q)·φ̃(k_j) e^{c_j − c}; den > 0 gives out = Σ w v / den and
 * lse = ln den + c + c_q. No visible key (or den ≤ 0) gives 0 and −∞.
 */
export function emitGroupedAttend(s: GroupedAttendShape, withLse: boolean): ProgramKernel {
  const { batch: B, headsQ: H, headsKV: HK, seqQ: N, seqKV: M, headDimV: DV } = s;
  const rows = B * H * N;
  const headsGQ = s.headsGroupQ ?? H;
  if (headsGQ !== H && headsGQ !== HK)
    throw new Error(
      `grouped attend: the query grouping covers ${headsGQ} heads; want ${H} (query) or ${HK} (KV)`,
    );
  // A query grouping over the KV heads: query head h reads its KV head's slice of N ranks.
  const rankQ =
    headsGQ === H
      ? '  const int g = p.rank_q[row] / SQ;'
      : "  const int g = p.rank_q[(long long)(b * HK + h / GROUP) * N + i] / SQ;  // the KV head's slice";
  const phi = s.features !== null;
  const X = phi ? 'F' : 'D';
  const qRow = phi ? 'p.phi_q' : 'p.q';
  const kRow = phi ? 'p.phi_k' : 'p.k';
  // Per lane: its key's log-weight key (score, or key stabiliser) and the factor w = x·e^{key − mn}.
  const score = phi
    ? `    const float key = j >= 0 ? p.stab_k[kvRow + j] : TSR_NEG_INF;  // c_j`
    : `    const float key = j >= 0 ? dot * SCALE : TSR_NEG_INF;  // the score`;
  const weight = phi ? 'dot * expf(key - mn)' : 'expf(key - mn)';
  const body = `  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const long long row = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5);  // (b, h, i)
  if (row >= ROWS) return;  // whole warps leave together
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* sw = (float*)tsr_smem + warp * 32;                 // [32] the chunk's weights
  int* sj = (int*)((float*)tsr_smem + WARPS * 32) + warp * 32;  // [32] the chunk's keys (-1: none)
  const int i = (int)(row % N), h = (int)((row / N) % H), b = (int)(row / ((long long)N * H));
  const long long kvRow = (long long)(b * HK + h / GROUP) * M;  // first key row of the KV head
  const float* qr = ${qRow} + row * ${X};
  const float* kb = ${kRow} + kvRow * ${X};
  const float* vb = p.v + kvRow * DV;
  const int* ord = p.order_kv + kvRow;
${rankQ}
  const int m0 = g * SKV, m1 = min(m0 + SKV, M);
  float m = TSR_NEG_INF, l = 0.f, acc[VC];
  #pragma unroll
  for (int c = 0; c < VC; ++c) acc[c] = 0.f;
  for (int e0 = m0; e0 < m1; e0 += 32) {
    int j = e0 + lane < m1 ? ord[e0 + lane] : -1;
    if (CAUSAL && j > i) j = -1;
    float dot = 0.f;
    if (j >= 0) {
      const float* kr = kb + (long long)j * ${X};
      for (int c = 0; c < ${X}; ++c) dot = fmaf(qr[c], kr[c], dot);
    }
${score}
    float cm = key;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, o));
    if (cm == TSR_NEG_INF) continue;  // no visible key in this chunk (the same on every lane)
    const float mn = fmaxf(m, cm);
    const float corr = expf(m - mn);  // m = -inf at first: 0
    const float w = j >= 0 ? ${weight} : 0.f;
    float cs = w;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) cs += __shfl_xor_sync(0xffffffffu, cs, o);
    l = fmaf(l, corr, cs);
    m = mn;
    sw[lane] = w;
    sj[lane] = j;
    __syncwarp();
    #pragma unroll
    for (int c = 0; c < VC; ++c) acc[c] *= corr;
    for (int t = 0; t < 32; ++t) {
      const int jt = sj[t];
      if (jt < 0) continue;
      const float wt = sw[t];
      const float* vr = vb + (long long)jt * DV;
      #pragma unroll
      for (int c = 0; c < VC; ++c) if (c * 32 + lane < DV) acc[c] = fmaf(wt, vr[c * 32 + lane], acc[c]);
    }
    __syncwarp();  // the chunk's weights are read before the next chunk writes them
  }
  const bool some = l > 0.f;
  const float inv = some ? 1.f / l : 0.f;
  #pragma unroll
  for (int c = 0; c < VC; ++c)
    if (c * 32 + lane < DV) p.out[row * DV + c * 32 + lane] = acc[c] * inv;
${withLse ? `  if (lane == 0) p.lse[row] = some ? ${phi ? 'logf(l) + m + p.stab_q[row]' : 'm + logf(l)'} : TSR_NEG_INF;\n` : ''}`;
  const what = [
    phi ? `${s.featureMap ?? 'feature'} features` : 'softmax',
    s.causal ? 'causal' : 'no mask',
  ];
  const k = programKernel(
    `grouped attend (${what.join(', ')})`,
    'tsr_grouped_attend',
    [
      ...(phi ? [ptr('phi_q'), ptr('stab_q'), ptr('phi_k'), ptr('stab_k')] : [ptr('q'), ptr('k')]),
      ptr('v'),
      ptr('rank_q', 'const int*'),
      ptr('order_kv', 'const int*'),
      ptr('out', 'float*'),
      ...(withLse ? [ptr('lse', 'float*')] : []),
    ],
    [
      `constexpr int WARPS = ${WARPS};`,
      `constexpr int H = ${H}, HK = ${HK}, GROUP = ${H / HK}, N = ${N}, M = ${M}, D = ${s.headDim}, DV = ${DV};`,
      ...(phi ? [`constexpr int F = ${s.features};  // features per row`] : []),
      `constexpr int VC = ${Math.ceil(DV / 32)};  // output columns per lane`,
      `constexpr int SQ = ${s.sizeQ}, SKV = ${s.sizeKV};  // rows per query group, per key group`,
      `constexpr bool CAUSAL = ${s.causal};`,
      ...(phi ? [] : [`constexpr float SCALE = ${floatLiteral(s.scale)};`]),
      `constexpr long long ROWS = ${rows}LL;`,
    ],
    body,
    rows,
    32,
  );
  return { ...k, entry: { ...k.entry, dynamicSharedBytes: WARPS * 32 * 8 } };
}
