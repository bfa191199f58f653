/**
 * CUDA C++ for the program steps that pick or attend to blocks: `select` (top-k blocks by q·k,
 * written as the entries of a CSR block layout the flash kernels walk), `compressed` (softmax
 * over block summaries) and the per-row selected attend (for key blocks the flash kernel cannot
 * take). One warp per row.
 */
import type { AttentionSpec, CompressedStep, SelectStep } from '@tessera/core';
import { capturedFields, scoreFunctions } from '../emit/common.js';
import { exprPrelude, floatLiteral } from '../expr-cuda.js';
import { PROGRAM_THREADS, type ProgramKernel, programKernel, ptr } from './emit.js';

const WARPS = 8; // rows per 256-thread block

/**
 * Select: one warp per (batch, query head, query block). The candidates are the row of the spec's
 * static layout (`row_start`/`kv_blocks`, slice by b/h as the layout has them); lanes score them
 * (f64 sums of exact f32 products, rounded to f32, as the cpu reference) into `scores` at the row's
 * `score_base`. A candidate is kept when it meets the local window or when fewer than `take`
 * unforced candidates beat it (higher score, or equal with a lower block). Kept blocks go to
 * `sel_blocks` from `sel_start[row]` in ascending order (a ballot prefix count per 32 candidates);
 * the row starts are data-independent and come from the host.
 */
export function emitSelect(
  step: SelectStep,
  slices: { batches: number; heads: number },
): ProgramKernel {
  const { spec, blockQ, blockKV, topK, local } = step;
  const NQ = Math.ceil(spec.seqQ / blockQ);
  const NK = Math.ceil(spec.seqKV / blockKV);
  const rows = spec.batch * spec.headsQ * NQ;
  const body = `  const int row = (int)blockIdx.x * WARPS + (int)(threadIdx.x >> 5);  // (b, h, qb)
  if (row >= ROWS) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const int qb = row % NQ, h = (row / NQ) % H, b = row / (NQ * H), hk = h / GROUP;
  const int srow = ((LB == 1 ? 0 : b) * LH + (LH == 1 ? 0 : h)) * NQ + qb;
  const int c0 = p.row_start[srow], n = p.row_start[srow + 1] - c0;
  const int* cand = p.kv_blocks + c0;
  float* sc = p.scores + p.score_base[row];
  const float* qr = p.q + (long long)row * D;
  const float* kb = p.k + (long long)(b * HK + hk) * NK * D;
  for (int i = lane; i < n; i += 32) {
    const float* kr = kb + (long long)cand[i] * D;
    double s = 0.0;
    for (int d = 0; d < D; ++d) s += (double)qr[d] * (double)kr[d];
    sc[i] = (float)s;
  }
  __syncwarp();
  // forced: the candidates meeting keys [qb*BQ - (LOCAL-1)*BKV, (qb+1)*BQ)
  const int lo = qb * BQ - (LOCAL - 1) * BKV, hi = (qb + 1) * BQ;
  int forced = 0;
  for (int base = 0; base < n; base += 32) {
    const int i = base + lane;
    const bool f = LOCAL > 0 && i < n && cand[i] * BKV < hi && (cand[i] + 1) * BKV > lo;
    forced += __popc(__ballot_sync(0xffffffffu, f));
  }
  const int take = min(TOPK, n) - forced;
  int* out = p.sel_blocks + p.sel_start[row];
  int written = 0;
  for (int base = 0; base < n; base += 32) {
    const int i = base + lane;
    bool keep = false;
    if (i < n) {
      const int j = cand[i];
      if (LOCAL > 0 && j * BKV < hi && (j + 1) * BKV > lo) {
        keep = true;
      } else {
        const float s = sc[i];
        int rank = 0;
        for (int t = 0; t < n && rank < take; ++t) {
          const int jt = cand[t];
          if (t == i || (LOCAL > 0 && jt * BKV < hi && (jt + 1) * BKV > lo)) continue;
          const float st = sc[t];
          rank += (st > s || (st == s && t < i)) ? 1 : 0;
        }
        keep = rank < take;
      }
    }
    const unsigned kept = __ballot_sync(0xffffffffu, keep);
    if (keep) out[written + __popc(kept & ((1u << lane) - 1u))] = cand[i];
    written += __popc(kept);
  }`;
  return programKernel(
    'select',
    'tsr_select',
    [
      ptr('q'),
      ptr('k'),
      ptr('row_start', 'const int*'),
      ptr('kv_blocks', 'const int*'),
      ptr('score_base', 'const int*'),
      ptr('scores', 'float*'),
      ptr('sel_start', 'const int*'),
      ptr('sel_blocks', 'int*'),
    ],
    [
      `constexpr int WARPS = ${WARPS};`,
      `constexpr int H = ${spec.headsQ}, HK = ${spec.headsKV}, GROUP = ${spec.headsQ / spec.headsKV}, D = ${spec.headDim};`,
      `constexpr int NQ = ${NQ}, NK = ${NK}, BQ = ${blockQ}, BKV = ${blockKV}, TOPK = ${topK}, LOCAL = ${local};`,
      `constexpr int LB = ${slices.batches}, LH = ${slices.heads};  // slices of the static layout`,
      `constexpr int ROWS = ${rows};`,
    ],
    body,
    rows,
    32,
  );
}

/**
 * Expand: a selection of `from.blockKV`-key blocks rewritten as one of `blockKV`-key blocks
 * (blockKV · M = from.blockKV), for a flash kernel that walks smaller key blocks than the selection
 * has. Block j becomes sub-blocks M·j … M·j+M−1 in order, so rows stay ascending; sub-blocks at or
 * past the last key are dropped (only the last block has any), so the key set is unchanged. A row's
 * new start is M × its old start less the sub-blocks dropped in the rows before it: one block of
 * threads, each owning consecutive rows, counts its drops into `drops`, and after a barrier adds
 * up the counts of the threads before it.
 */
export function emitExpandSelection(
  from: { readonly rows: number; readonly blockKV: number; readonly seqKV: number },
  blockKV: number,
): ProgramKernel {
  const M = from.blockKV / blockKV;
  if (!Number.isInteger(M) || M < 2)
    throw new Error(`expand: ${from.blockKV}-key blocks do not split into ${blockKV}-key blocks`);
  const NB = Math.ceil(from.seqKV / from.blockKV);
  const NBS = Math.ceil(from.seqKV / blockKV);
  const body = `  const int t = threadIdx.x;
  const int r0 = min(ROWS, t * PER), r1 = min(ROWS, r0 + PER);
  int dropped = 0;  // the last block's sub-blocks past the keys, in this thread's rows
  for (int r = r0; r < r1; ++r) {
    const int e1 = p.sel_start[r + 1];
    if (e1 > p.sel_start[r] && p.sel_blocks[e1 - 1] == NB - 1) dropped += PAST;
  }
  p.drops[t] = dropped;
  __syncthreads();
  int before = 0;
  for (int u = 0; u < t; ++u) before += p.drops[u];
  int o = M * p.sel_start[r0] - before;
  for (int r = r0; r < r1; ++r) {
    p.out_start[r] = o;
    for (int e = p.sel_start[r]; e < p.sel_start[r + 1]; ++e) {
      const int j = p.sel_blocks[e];
      for (int s = 0; s < M; ++s)
        if (M * j + s < NBS) p.out_blocks[o++] = M * j + s;
    }
  }
  if (t == NTHREADS - 1) p.out_start[ROWS] = o;  // its rows are the last ones (or none)`;
  return programKernel(
    `expand selection (${from.blockKV}-key blocks -> ${blockKV})`,
    'tsr_expand_selection',
    [
      ptr('sel_start', 'const int*'),
      ptr('sel_blocks', 'const int*'),
      ptr('drops', 'int*'),
      ptr('out_start', 'int*'),
      ptr('out_blocks', 'int*'),
    ],
    [
      `constexpr int ROWS = ${from.rows}, PER = ${Math.max(1, Math.ceil(from.rows / PROGRAM_THREADS))};`,
      `constexpr int M = ${M}, NB = ${NB}, NBS = ${NBS};  // sub-blocks per block, blocks, sub-blocks`,
      `constexpr int PAST = ${M * NB - NBS};  // sub-blocks of the last block past the keys`,
    ],
    body,
    1,
    PROGRAM_THREADS,
  );
}

/** What a compressed kernel needs to know about the selection it reads, if any. */
export interface SelectionShape {
  readonly mode: 'exclude' | 'only';
  readonly blockQ: number;
  readonly numQBlocks: number;
}

/**
 * Compressed: one warp per query row. Lanes split the q·k_j dot product and own output columns
 * lane, lane + 32, ...; the score of summary j is scale·q·k_j + ln n_j; causal keeps the blocks strictly
 * before the query's own block (j < ⌊i / block⌋); a selection row (ascending) is walked alongside j.
 * With `features` (a feature-map kernel, F features): the rows are the stabilised features the
 * linear module's feature kernel wrote (`phi_q` [B, H, N, F], `phi_k` [B, HK, NB, F], stabilisers
 * `stab_q`, `stab_k`) and the score is ln(φ̃(q)·φ̃(k_j)) + c_q + c_j + ln n_j, summaries with no
 * mass skipped, so exp(score) = n_j φ(q)·φ(k_j) and lse = ln Σ_j n_j φ(q)·φ(k_j).
 */
export function emitCompressed(
  step: CompressedStep,
  q: readonly [number, number, number, number],
  k: readonly [number, number, number, number],
  dv: number,
  selection: SelectionShape | null,
  features: number | null = null,
): ProgramKernel {
  const [B, H, N, D] = q;
  const HK = k[1];
  const NB = k[2];
  const rows = B * H * N;
  const mode = selection === null ? 0 : selection.mode === 'exclude' ? 1 : 2;
  const phi = features !== null;
  const X = phi ? 'F' : 'D'; // the length of the rows the dot product runs over
  const qRow = phi ? 'p.phi_q' : 'p.q';
  const kRow = phi ? 'p.phi_k' : 'p.k';
  const score = phi
    ? `    if (!(dot > 0.f)) continue;  // no mass (the same sum on every lane: the warp stays together)
    const float s = logf(dot) + cq + ck[j] + logf((float)min(BLOCK, SEQKV - j * BLOCK));`
    : '    const float s = fmaf(dot, SCALE, logf((float)min(BLOCK, SEQKV - j * BLOCK)));';
  const body = `  const long long row = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5);  // (b, h, i)
  if (row >= ROWS) return;
  const int lane = threadIdx.x & 31;
  const int i = (int)(row % N), h = (int)((row / N) % H), b = (int)(row / ((long long)N * H));
  const int hk = h / GROUP;
  float qv[QC];
  #pragma unroll
  for (int c = 0; c < QC; ++c) qv[c] = c * 32 + lane < ${X} ? ${qRow}[row * ${X} + c * 32 + lane] : 0.f;
  const float* kb = ${kRow} + (long long)(b * HK + hk) * NB * ${X};
${phi ? '  const float cq = p.stab_q[row];\n  const float* ck = p.stab_k + (long long)(b * HK + hk) * NB;\n' : ''}  const float* vb = p.v + (long long)(b * HK + hk) * NB * DV;
${
  mode
    ? `  const int srow = (b * H + h) * SEL_NQ + i / SEL_BQ;
  int e = p.sel_start[srow];
  const int e1 = p.sel_start[srow + 1];
`
    : ''
}  float m = TSR_NEG_INF, l = 0.f, acc[VC];
  #pragma unroll
  for (int c = 0; c < VC; ++c) acc[c] = 0.f;
  for (int j = 0; j < NB; ++j) {
    if (CAUSAL && j >= i / BLOCK) break;  // only blocks strictly before the query's own
${step.skipOwnBlock ? '    if (j == i / BLOCK) continue;  // skipOwnBlock\n' : ''}${
  mode
    ? `    while (e < e1 && p.sel_blocks[e] < j) ++e;
    const bool chosen = e < e1 && p.sel_blocks[e] == j;
    if (${mode === 1 ? 'chosen' : '!chosen'}) continue;
`
    : ''
}    float dot = 0.f;
    #pragma unroll
    for (int c = 0; c < QC; ++c) if (c * 32 + lane < ${X}) dot = fmaf(qv[c], kb[(long long)j * ${X} + c * 32 + lane], dot);
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
${score}
    const float mn = fmaxf(m, s);
    const float corr = expf(m - mn);  // m = -inf at first: 0
    const float pr = expf(s - mn);
    l = fmaf(l, corr, pr);
    #pragma unroll
    for (int c = 0; c < VC; ++c)
      if (c * 32 + lane < DV) acc[c] = fmaf(acc[c], corr, pr * vb[(long long)j * DV + c * 32 + lane]);
    m = mn;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  #pragma unroll
  for (int c = 0; c < VC; ++c)
    if (c * 32 + lane < DV) p.out[row * DV + c * 32 + lane] = acc[c] * inv;
${step.lse !== undefined ? '  if (lane == 0) p.lse[row] = l > 0.f ? m + logf(l) : TSR_NEG_INF;\n' : ''}`;
  const what = [
    ...(phi ? [`${step.kernel?.featureMap ?? 'feature'} features`] : []),
    ...(step.skipOwnBlock ? ['skipOwnBlock'] : []),
    ...(selection ? [`selection: ${selection.mode}`] : []),
  ];
  return programKernel(
    `compressed${what.length ? ` (${what.join(', ')})` : ''}`,
    'tsr_compressed',
    [
      ...(phi ? [ptr('phi_q'), ptr('stab_q'), ptr('phi_k'), ptr('stab_k')] : [ptr('q'), ptr('k')]),
      ptr('v'),
      ...(mode ? [ptr('sel_start', 'const int*'), ptr('sel_blocks', 'const int*')] : []),
      ptr('out', 'float*'),
      ...(step.lse !== undefined ? [ptr('lse', 'float*')] : []),
    ],
    [
      `constexpr int WARPS = ${WARPS};`,
      `constexpr int H = ${H}, HK = ${HK}, GROUP = ${H / HK}, N = ${N}, D = ${D}, DV = ${dv};`,
      ...(phi ? [`constexpr int F = ${features};  // features per row`] : []),
      `constexpr int QC = ${Math.ceil((features ?? D) / 32)}, VC = ${Math.ceil(dv / 32)};  // columns per lane`,
      `constexpr int NB = ${NB}, BLOCK = ${step.block}, SEQKV = ${step.seqKV};`,
      `constexpr bool CAUSAL = ${step.causal};`,
      ...(phi ? [] : [`constexpr float SCALE = ${floatLiteral(step.scale)};`]),
      ...(selection
        ? [`constexpr int SEL_BQ = ${selection.blockQ}, SEL_NQ = ${selection.numQBlocks};`]
        : []),
      `constexpr long long ROWS = ${rows}LL;`,
    ],
    body,
    rows,
    32,
  );
}

/** The selection a per-row selected attend walks: its blocks and the slices its layout has. */
export interface RowSelectionShape {
  readonly blockQ: number;
  readonly blockKV: number;
  readonly batches: number;
  readonly heads: number;
}

/** Most value columns a per-row selected attend accumulates in registers. */
export const SELECTED_ROWS_MAX_COLUMNS = 1024;

/**
 * Selected attend, one warp per query row (b, h, q), for selections whose key blocks the flash
 * kernel cannot take (fewer than 32 keys, or not a multiple of 32). The row reads its query
 * block's CSR row (`sel_start` / `sel_blocks`, ⌊q / BQ⌋) and walks the key slots of its blocks in
 * order, 32 at a time: lane t takes slot s, key kv = blocks[s / BKV]·BKV + s % BKV, kept when
 * kv < SKV and the spec's mask allows (b, h, q, kv); its logit is the spec's score pipeline
 * (tsr_logit2: scale, score modification, base 2; the flash kernels' device functions). The warp
 * folds each chunk into an online softmax (max and sum by shuffles); each lane accumulates output
 * columns lane, lane + 32, ..., the chunk's weights and keys broadcast by shuffles. f32 in and
 * out; lse = ln Σ exp. A row with no visible key gives 0 and −∞.
 */
export function emitSelectedRows(
  spec: AttentionSpec,
  sel: RowSelectionShape,
  kernelName = 'tsr_selected_rows',
): ProgramKernel {
  if (spec.dtype !== 'f32' || spec.layout !== 'bhsd' || spec.kernel.type !== 'softmax')
    throw new Error('selected rows: f32 softmax specs in bhsd only');
  const { batch: B, headsQ: H, seqQ: N, headDimV: DV } = spec;
  const rows = B * H * N;
  const masked = spec.mask !== null;
  const body = `  const long long row = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5);  // (b, h, q)
  if (row >= ROWS) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const int q = (int)(row % SQ), h = (int)((row / SQ) % HQ), b = (int)(row / ((long long)SQ * HQ));
  const long long kvRow = (long long)(b * HKV + h / GROUP) * SKV;  // first key row of the KV head
  const float* qr = p.q + row * D;
  const float* kb = p.k + kvRow * D;
  const float* vb = p.v + kvRow * DV;
  const int srow = ((LB == 1 ? 0 : b) * LH + (LH == 1 ? 0 : h)) * NQB + q / BQ;
  const int e0 = p.sel_start[srow];
  const int slots = (p.sel_start[srow + 1] - e0) * BKV;  // key slots of the row's blocks
  const int* blocks = p.sel_blocks + e0;
  float m = TSR_NEG_INF, l = 0.f, acc[VC];  // m, l in base 2
  #pragma unroll
  for (int c = 0; c < VC; ++c) acc[c] = 0.f;
  for (int s0 = 0; s0 < slots; s0 += 32) {
    const int s = s0 + lane;
    const int kv = s < slots ? blocks[s / BKV] * BKV + s % BKV : SKV;
    float x = TSR_NEG_INF;
    if (kv < SKV${masked ? ' && tsr_mask(b, h, q, kv, p)' : ''}) {
      const float* kr = kb + (long long)kv * D;
      float dot = 0.f;
      for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
      x = tsr_logit2(dot, b, h, q, kv, p);
    }
    float cm = x;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, o));
    if (cm == TSR_NEG_INF) continue;  // no visible key in this chunk (the same on every lane)
    const float mn = fmaxf(m, cm);
    const float alpha = exp2f(m - mn);  // m = -inf at first: 0
    const float pr = exp2f(x - mn);     // hidden keys: 0
    float cs = pr;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) cs += __shfl_xor_sync(0xffffffffu, cs, o);
    l = fmaf(l, alpha, cs);
    m = mn;
    #pragma unroll
    for (int c = 0; c < VC; ++c) acc[c] *= alpha;
    const int n = min(32, slots - s0);
    for (int t = 0; t < n; ++t) {
      const float pt = __shfl_sync(0xffffffffu, pr, t);
      const int kt = __shfl_sync(0xffffffffu, kv, t);
      if (pt == 0.f) continue;  // a hidden key (the same on every lane)
      const float* vr = vb + (long long)kt * DV;
      #pragma unroll
      for (int c = 0; c < VC; ++c) if (c * 32 + lane < DV) acc[c] = fmaf(pt, vr[c * 32 + lane], acc[c]);
    }
  }
  const bool some = l > 0.f;
  const float inv = some ? 1.f / l : 0.f;
  #pragma unroll
  for (int c = 0; c < VC; ++c)
    if (c * 32 + lane < DV) p.out[row * DV + c * 32 + lane] = acc[c] * inv;
  if (lane == 0) p.lse[row] = some ? (m + log2f(l)) * TSR_LN2 : TSR_NEG_INF;`;
  const extra = `#define TSR_LOG2E 1.4426950408889634f
#define TSR_LN2 0.6931471805599453f
// mask: ${spec.mask?.name ?? 'none'}; score mod: ${spec.scoreMod?.name ?? 'none'}
${exprPrelude()}

${scoreFunctions(spec, 'TsrParams')}
`;
  return programKernel(
    `selected attend, one warp per row (${sel.blockQ}×${sel.blockKV} blocks)`,
    kernelName,
    [
      ptr('q'),
      ptr('k'),
      ptr('v'),
      ptr('out', 'float*'),
      ptr('lse', 'float*'),
      ptr('sel_start', 'const int*'),
      ptr('sel_blocks', 'const int*'),
      ...capturedFields(spec),
    ],
    [
      `constexpr int WARPS = ${WARPS};`,
      `constexpr int BATCH = ${B}, HQ = ${H}, HKV = ${spec.headsKV}, GROUP = ${H / spec.headsKV};`,
      `constexpr int SQ = ${N}, SKV = ${spec.seqKV}, D = ${spec.headDim}, DV = ${DV};`,
      `constexpr int VC = ${Math.ceil(DV / 32)};  // output columns per lane`,
      `constexpr int BQ = ${sel.blockQ}, BKV = ${sel.blockKV}, NQB = ${Math.ceil(N / sel.blockQ)};`,
      `constexpr int LB = ${sel.batches}, LH = ${sel.heads};  // slices of the selection's layout`,
      `constexpr long long ROWS = ${rows}LL;`,
    ],
    body,
    rows,
    32,
    extra,
  );
}
