import type { AttentionSpec } from '@tessera/core';
import { mmaPtxHelpers } from '../emit/flash-mma.js';
import type { BackwardPlan } from './plan.js';

const WARPS = 4;

/** What the element code needs from the module: the terms' statements and the uniform flush. */
export interface TermCode {
  /** Declarations before tsr_bwd_terms (w, ix arrays), or ''. */
  readonly decl: string;
  /** The call's extra arguments (', w, ix' or ''). */
  readonly args: string;
  /** Statements accumulating dsp · w[i] (dk/dv pass only). */
  readonly accumulate: string;
  /** Per-thread accumulators' declaration and the per-head flush (dk/dv pass only). */
  readonly init: string;
  readonly flush: string;
}

/** Backward of one score fragment element: pr (P) and ds (scale · dS) from s[..] and dp[..]. */
function element(o: {
  q: string;
  kv: string;
  l2: string;
  dl: string;
  live: string;
  dot: string;
  dp: string;
  terms: TermCode;
  withTerms: boolean;
}): string {
  return `{
          const int q = ${o.q}, kv = ${o.kv};
          const float dot = ${o.dot};
          float pr = 0.f, ds = 0.f;
          if (${o.live}) {
            pr = tsr_exp2(tsr_logit2(dot, b, h, q, kv, p) - ${o.l2});
            if (pr > 0.f) {
              const float dsp = pr * (${o.dp} - ${o.dl});
${o.terms.decl ? `              ${o.terms.decl}\n` : ''}              ds = dsp * tsr_bwd_terms(dot, b, h, q, kv, p${o.terms.args}) * SCALE;
${o.withTerms && o.terms.accumulate ? `              ${o.terms.accumulate}\n` : ''}            }
          }
          ps[i] = pr;
          dss[i] = ds;
        }`;
}

/**
 * The tensor-core dk/dv and dq kernels (mma.sync m16n8k16, 16-bit operands, f32 accumulation).
 * dk/dv: a CTA owns BN = 64 keys, a warp 16 of them; per visiting Q block (BM rows) it computes
 * Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ, turns them into Pᵀ and dSᵀ in registers, and accumulates
 * dV += Pᵀ·dO and dK += dSᵀ·Q, so a warp's keys never need another warp's sums. dq: a CTA owns
 * QBM = 64 query rows, a warp 16; per KV block S = Q·Kᵀ, dP = dO·Vᵀ, dS, and dQ += dS·K.
 */
export function emitMmaBackward(
  spec: AttentionSpec,
  plan: BackwardPlan,
  names: { readonly dkdv: string; readonly dq: string },
  terms: TermCode,
): { source: string; shared: [number, number]; threads: number } {
  const mmaType = spec.dtype === 'bf16' ? 'bf16' : 'f16';
  const threads = WARPS * 32;
  const D = spec.headDim;
  const DV = spec.headDimV;
  const ldk = D + 8;
  const ldv = DV + 8;
  const { blockQ: BM, blockKV: BN, dqBlockQ: QBM, dqBlockKV: QBN } = plan;
  if (BN !== 16 * WARPS || QBM !== 16 * WARPS) throw new Error('mma backward: a warp owns 16 rows');
  // K, V resident; two stages of (Q, dO, base-2 lse, D); the flush's per-warp sums
  const dkdvShared = 2 * BN * (ldk + ldv) + 2 * (2 * BM * (ldk + ldv) + 8 * BM) + 4 * WARPS;
  // Q, dO resident; two stages of (K, V)
  const dqShared = 2 * QBM * (ldk + ldv) + 2 * 2 * QBN * (ldk + ldv);
  const hasMask = spec.mask !== null;
  const live = (qb: string, kb: string) =>
    [qb, kb, hasMask ? '(full || tsr_mask(b, h, q, kv, p))' : ''].filter(Boolean).join(' && ') ||
    'true';
  const source = `constexpr int NWARPS = ${WARPS}, NTHREADS = ${threads};
constexpr int LDK = D + 8, LDV = DV + 8;  // smem row strides (halves): +16 B kills ldmatrix bank conflicts
constexpr int KS = D / 16, KSV = DV / 16, NDK = D / 8, NDV = DV / 8;
constexpr bool QTAIL = SQ % BM != 0, KVTAIL = SKV % BN != 0;      // dk/dv pass
constexpr bool QQTAIL = SQ % QBM != 0, QKVTAIL = SKV % QBN != 0;  // dq pass
struct __align__(8) tsr_f2 { float x, y; };  // one 8-byte store of two f32 gradients

${mmaPtxHelpers(mmaType)}
// Copies rows [row0, row0 + ROWS) of a [rows x COLS] global matrix into a smem tile with row stride
// LD by 16-byte cp.async chunks; rows past \`rows\` (checked only when CHECK_ROWS) are zero-filled.
template <int ROWS, int COLS, int LD, bool CHECK_ROWS>
__device__ __forceinline__ void tsr_load_tile(tsr_elem* dst, const tsr_elem* src, int row0, int rows,
                                              long long stride, int tid) {
  constexpr int CPR = COLS / 8, CHUNKS = ROWS * CPR, ITERS = (CHUNKS + NTHREADS - 1) / NTHREADS;
  #pragma unroll 1
  for (int i = 0; i < ITERS; ++i) {
    const int c = tid + i * NTHREADS;
    if (CHUNKS % NTHREADS != 0 && c >= CHUNKS) break;
    const int r = c / CPR, ch = c % CPR;
    const bool ok = !CHECK_ROWS || row0 + r < rows;
    const tsr_elem* g = ok ? src + (long long)(row0 + r) * stride + ch * 8 : src;
    tsr_cp_async16(dst + r * LD + ch * 8, g, ok ? 16 : 0);
  }
}

// dK, dV of BN keys (one CTA per batch, KV head, KV block; a warp owns 16 keys), over the Q blocks
// that visit the block (the layout's column view) for every query head of the group. Q/dO tiles
// stream through two shared-memory stages: the next visiting block (of this head or the next
// one) is copied by cp.async, and its lse and D read into registers, while this one is computed.
extern "C" __global__ void __launch_bounds__(NTHREADS) ${names.dkdv}(const TsrBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  constexpr int STAGE = 2 * BM * (LDK + LDV) + 8 * BM;   // bytes: Q [BM][LDK], dO [BM][LDV], lse2 [BM], D [BM]
  tsr_elem* sK = reinterpret_cast<tsr_elem*>(tsr_smem);  // [BN][LDK]
  tsr_elem* sV = sK + BN * LDK;                          // [BN][LDV]
  unsigned char* sStage = reinterpret_cast<unsigned char*>(sV + BN * LDV);  // [2][STAGE]
  float* sRed = reinterpret_cast<float*>(sStage + 2 * STAGE);  // [NWARPS]
  (void)sRed;
  int j, hk, b;
  tsr_bwd_cta<NKB, HKV, DKDV_DESC>(j, hk, b);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int k0 = j * BN;
  const long long kbase = b * K_SB + hk * K_SH, vbase = b * V_SB + hk * V_SH;
  tsr_load_tile<BN, D, LDK, KVTAIL>(sK, p.k + kbase, k0, SKV, K_SS, tid);
  tsr_load_tile<BN, DV, LDV, KVTAIL>(sV, p.v + vbase, k0, SKV, V_SS, tid);
  tsr_cp_commit();
  const int cbase = (p.layout_batches == 1 ? 0 : b) * p.layout_heads;
  auto column = [&](int hg) { return (cbase + (p.layout_heads == 1 ? 0 : hk * GROUP + hg)) * NKB + j; };
  // Starts copying visiting entry e of head hg into stage st; returns this thread's lse2 / D value
  // of it (threads [0, BM): lse2 of row tid, [BM, 2 BM): D of row tid - BM), stored after compute.
  auto fetch = [&](int hg, int e, int st) -> float {
    const int h = hk * GROUP + hg, q0 = p.q_blocks[e] * BM;
    tsr_elem* dQ = reinterpret_cast<tsr_elem*>(sStage + st * STAGE);
    tsr_load_tile<BM, D, LDK, QTAIL>(dQ, p.q + b * Q_SB + h * Q_SH, q0, SQ, Q_SS, tid);
    tsr_load_tile<BM, DV, LDV, QTAIL>(dQ + BM * LDK, p.dout + b * O_SB + h * O_SH, q0, SQ, O_SS, tid);
    tsr_cp_commit();
    const int r = q0 + tid % BM;
    const long long at = (long long)(b * HQ + h) * SQ + r;
    if (tid < BM) return r < SQ ? p.lse2[at] : -TSR_NEG_INF;
    if (tid < 2 * BM) return r < SQ ? p.delta[at] : 0.f;
    return 0.f;
  };
  auto stageRows = [&](int st) { return reinterpret_cast<float*>(sStage + st * STAGE + 2 * BM * (LDK + LDV)); };
  // The entry after (hg, e) in visiting order, skipping heads whose column is empty (nh == GROUP: none).
  auto next = [&](int hg, int e, int e1, int& nh, int& ne) {
    nh = hg;
    ne = e + 1;
    if (ne < e1) return;
    for (nh = hg + 1; nh < GROUP; ++nh) {
      const int c = column(nh);
      ne = p.col_start[c];
      if (ne < p.col_start[c + 1]) return;
    }
  };
  float dk[NDK][4], dv[NDV][4];
  #pragma unroll
  for (int d = 0; d < NDK; ++d) dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = 0.f;
  #pragma unroll
  for (int d = 0; d < NDV; ++d) dv[d][0] = dv[d][1] = dv[d][2] = dv[d][3] = 0.f;
  const int krow = k0 + warp * 16 + g;  // this thread's keys: krow (fragments 0, 1) and krow + 8 (2, 3)
  const tsr_elem* sKw = sK + (warp * 16 + (lane & 15)) * LDK + (lane >> 4) * 8;
  const tsr_elem* sVw = sV + (warp * 16 + (lane & 15)) * LDV + (lane >> 4) * 8;
  {  // the first entry into stage 0
    int nh, ne;
    next(-1, 0, 0, nh, ne);
    if (nh < GROUP) {
      const float x = fetch(nh, ne, 0);
      if (tid < 2 * BM) stageRows(0)[tid] = x;
    }
  }
  int it = 0;  // entries consumed: the stage of the current one is it & 1
  for (int hg = 0; hg < GROUP; ++hg) {
    const int h = hk * GROUP + hg;
    (void)h;
    const int col = column(hg);
    const int e0 = p.col_start[col], e1 = p.col_start[col + 1];
${terms.init}    for (int e = e0; e < e1; ++e, ++it) {
      const int q0 = p.q_blocks[e] * BM;
      const bool full = p.col_full[e];
      (void)full;
      tsr_cp_wait<0>();
      __syncthreads();  // this stage has landed; every warp is done with the other one
      int nh, ne;
      next(hg, e, e1, nh, ne);
      const float xn = nh < GROUP ? fetch(nh, ne, (it + 1) & 1) : 0.f;
      const tsr_elem* sQ = reinterpret_cast<const tsr_elem*>(sStage + (it & 1) * STAGE);
      const tsr_elem* sdO = sQ + BM * LDK;
      const float* sL = stageRows(it & 1);
      const float* sDl = sL + BM;
      // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x BM queries
      float s[BM / 8][4], dp[BM / 8][4];
      #pragma unroll
      for (int nt = 0; nt < BM / 8; ++nt)
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
      #pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        unsigned a[4];
        tsr_ldsm_x4(a, sKw + ks * 16);
        #pragma unroll
        for (int np = 0; np < BM / 16; ++np) {
          unsigned bq[4];
          tsr_ldsm_x4(bq, sQ + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDK + ks * 16 + ((lane >> 3) & 1) * 8);
          tsr_mma(s[2 * np], a, bq[0], bq[1]);
          tsr_mma(s[2 * np + 1], a, bq[2], bq[3]);
        }
      }
      #pragma unroll
      for (int ks = 0; ks < KSV; ++ks) {
        unsigned a[4];
        tsr_ldsm_x4(a, sVw + ks * 16);
        #pragma unroll
        for (int np = 0; np < BM / 16; ++np) {
          unsigned bo[4];
          tsr_ldsm_x4(bo, sdO + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDV + ks * 16 + ((lane >> 3) & 1) * 8);
          tsr_mma(dp[2 * np], a, bo[0], bo[1]);
          tsr_mma(dp[2 * np + 1], a, bo[2], bo[3]);
        }
      }
      // P^T and dS^T (scaled), packed to 16 bits as the A operands of the next products
      unsigned pk[BM / 8][2], dk16[BM / 8][2];
      #pragma unroll
      for (int nt = 0; nt < BM / 8; ++nt) {
        float ps[4], dss[4];
        #pragma unroll
        for (int i = 0; i < 4; ++i) ${element({
          q: 'q0 + nt * 8 + 2 * t4 + (i & 1)',
          kv: 'krow + (i >> 1) * 8',
          l2: 'sL[nt * 8 + 2 * t4 + (i & 1)]',
          dl: 'sDl[nt * 8 + 2 * t4 + (i & 1)]',
          live: live('', '(!KVTAIL || kv < SKV)'),
          dot: 's[nt][i]',
          dp: 'dp[nt][i]',
          terms,
          withTerms: true,
        })}
        pk[nt][0] = tsr_pack2(ps[0], ps[1]);
        pk[nt][1] = tsr_pack2(ps[2], ps[3]);
        dk16[nt][0] = tsr_pack2(dss[0], dss[1]);
        dk16[nt][1] = tsr_pack2(dss[2], dss[3]);
      }
      // dV += P^T dO and dK += dS^T Q: two adjacent n-tiles of P^T are one k-step's A fragment
      #pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) {
        const unsigned pa[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
        const unsigned da[4] = {dk16[2 * kk][0], dk16[2 * kk][1], dk16[2 * kk + 1][0], dk16[2 * kk + 1][1]};
        #pragma unroll
        for (int dp2 = 0; dp2 < NDV / 2; ++dp2) {
          unsigned bv[4];
          tsr_ldsm_x4_t(bv, sdO + (kk * 16 + (lane & 15)) * LDV + dp2 * 16 + (lane >> 4) * 8);
          tsr_mma(dv[2 * dp2], pa, bv[0], bv[1]);
          tsr_mma(dv[2 * dp2 + 1], pa, bv[2], bv[3]);
        }
        #pragma unroll
        for (int dp2 = 0; dp2 < NDK / 2; ++dp2) {
          unsigned bq[4];
          tsr_ldsm_x4_t(bq, sQ + (kk * 16 + (lane & 15)) * LDK + dp2 * 16 + (lane >> 4) * 8);
          tsr_mma(dk[2 * dp2], da, bq[0], bq[1]);
          tsr_mma(dk[2 * dp2 + 1], da, bq[2], bq[3]);
        }
      }
      if (nh < GROUP && tid < 2 * BM) stageRows((it + 1) & 1)[tid] = xn;  // read after the next barrier
    }
${terms.flush}  }
  tsr_cp_wait<0>();
  // epilogue: f32 gradients of this warp's keys
  #pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = krow + hf * 8;
    if (KVTAIL && r >= SKV) continue;
    #pragma unroll
    for (int d = 0; d < NDK; ++d)
      *reinterpret_cast<tsr_f2*>(p.dk + kbase + r * K_SS + d * 8 + 2 * t4) = tsr_f2{dk[d][2 * hf], dk[d][2 * hf + 1]};
    #pragma unroll
    for (int d = 0; d < NDV; ++d)
      *reinterpret_cast<tsr_f2*>(p.dv + vbase + r * V_SS + d * 8 + 2 * t4) = tsr_f2{dv[d][2 * hf], dv[d][2 * hf + 1]};
  }
}

// dQ of QBM query rows (one CTA per batch, query head, Q block; a warp owns 16 rows), over the KV
// blocks of the row in the layout: the second pass, so dq needs no atomics and is deterministic.
// K/V tiles stream through two shared-memory stages (the next block copied during this one).
extern "C" __global__ void __launch_bounds__(NTHREADS) ${names.dq}(const TsrBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  constexpr int STAGE = QBN * (LDK + LDV);               // elements: K [QBN][LDK], V [QBN][LDV]
  tsr_elem* sQ = reinterpret_cast<tsr_elem*>(tsr_smem);  // [QBM][LDK]
  tsr_elem* sdO = sQ + QBM * LDK;                        // [QBM][LDV]
  tsr_elem* sStage = sdO + QBM * LDV;                    // [2][STAGE]
  int qb, h, b;
  tsr_bwd_cta<QNQB, HQ, DQ_DESC>(qb, h, b);
  const int hk = h / GROUP;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qb * QBM;
  const long long qbase = b * Q_SB + h * Q_SH;
  const tsr_elem* kp = p.k + b * K_SB + hk * K_SH;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  const long long lbase = (long long)(b * HQ + h) * SQ;
  tsr_load_tile<QBM, D, LDK, QQTAIL>(sQ, p.q + qbase, q0, SQ, Q_SS, tid);
  tsr_load_tile<QBM, DV, LDV, QQTAIL>(sdO, p.dout + b * O_SB + h * O_SH, q0, SQ, O_SS, tid);
  tsr_cp_commit();
  auto fetch = [&](int e, int st) {
    const int k0 = p.kv_blocks[e] * QBN;
    tsr_elem* dK = sStage + st * STAGE;
    tsr_load_tile<QBN, D, LDK, QKVTAIL>(dK, kp, k0, SKV, K_SS, tid);
    tsr_load_tile<QBN, DV, LDV, QKVTAIL>(dK + QBN * LDK, vp, k0, SKV, V_SS, tid);
    tsr_cp_commit();
  };
  const int qrow = q0 + warp * 16 + g;  // this thread's rows: qrow (fragments 0, 1) and qrow + 8 (2, 3)
  float l2[2], dl[2];
  #pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = qrow + hf * 8;
    l2[hf] = r < SQ ? p.lse2[lbase + r] : -TSR_NEG_INF;
    dl[hf] = r < SQ ? p.delta[lbase + r] : 0.f;
  }
  float dq[NDK][4];
  #pragma unroll
  for (int d = 0; d < NDK; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.f;
  const tsr_elem* sQw = sQ + (warp * 16 + (lane & 15)) * LDK + (lane >> 4) * 8;
  const tsr_elem* sOw = sdO + (warp * 16 + (lane & 15)) * LDV + (lane >> 4) * 8;
  const int row = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * QNQB + qb;
  const int e0 = p.row_start[row], e1 = p.row_start[row + 1];
  if (e0 < e1) fetch(e0, 0);
  for (int e = e0, it = 0; e < e1; ++e, ++it) {
    const int k0 = p.kv_blocks[e] * QBN;
    const bool full = p.full[e];
    (void)full;
    tsr_cp_wait<0>();
    __syncthreads();  // this stage has landed; every warp is done with the other one
    if (e + 1 < e1) fetch(e + 1, (it + 1) & 1);
    const tsr_elem* sK = sStage + (it & 1) * STAGE;
    const tsr_elem* sV = sK + QBN * LDK;
    float s[QBN / 8][4], dp[QBN / 8][4];
    #pragma unroll
    for (int nt = 0; nt < QBN / 8; ++nt)
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
    #pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned a[4];
      tsr_ldsm_x4(a, sQw + ks * 16);
      #pragma unroll
      for (int np = 0; np < QBN / 16; ++np) {
        unsigned bk[4];
        tsr_ldsm_x4(bk, sK + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDK + ks * 16 + ((lane >> 3) & 1) * 8);
        tsr_mma(s[2 * np], a, bk[0], bk[1]);
        tsr_mma(s[2 * np + 1], a, bk[2], bk[3]);
      }
    }
    #pragma unroll
    for (int ks = 0; ks < KSV; ++ks) {
      unsigned a[4];
      tsr_ldsm_x4(a, sOw + ks * 16);
      #pragma unroll
      for (int np = 0; np < QBN / 16; ++np) {
        unsigned bv[4];
        tsr_ldsm_x4(bv, sV + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDV + ks * 16 + ((lane >> 3) & 1) * 8);
        tsr_mma(dp[2 * np], a, bv[0], bv[1]);
        tsr_mma(dp[2 * np + 1], a, bv[2], bv[3]);
      }
    }
    unsigned d16[QBN / 8][2];
    #pragma unroll
    for (int nt = 0; nt < QBN / 8; ++nt) {
      float ps[4], dss[4];
      #pragma unroll
      for (int i = 0; i < 4; ++i) ${element({
        q: 'qrow + (i >> 1) * 8',
        kv: 'k0 + nt * 8 + 2 * t4 + (i & 1)',
        l2: 'l2[i >> 1]',
        dl: 'dl[i >> 1]',
        live: live('', '(!QKVTAIL || kv < SKV)'),
        dot: 's[nt][i]',
        dp: 'dp[nt][i]',
        terms,
        withTerms: false,
      })}
      (void)ps;
      d16[nt][0] = tsr_pack2(dss[0], dss[1]);
      d16[nt][1] = tsr_pack2(dss[2], dss[3]);
    }
    // dQ += dS K
    #pragma unroll
    for (int kk = 0; kk < QBN / 16; ++kk) {
      const unsigned da[4] = {d16[2 * kk][0], d16[2 * kk][1], d16[2 * kk + 1][0], d16[2 * kk + 1][1]};
      #pragma unroll
      for (int dp2 = 0; dp2 < NDK / 2; ++dp2) {
        unsigned bk[4];
        tsr_ldsm_x4_t(bk, sK + (kk * 16 + (lane & 15)) * LDK + dp2 * 16 + (lane >> 4) * 8);
        tsr_mma(dq[2 * dp2], da, bk[0], bk[1]);
        tsr_mma(dq[2 * dp2 + 1], da, bk[2], bk[3]);
      }
    }
  }
  tsr_cp_wait<0>();
  #pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = qrow + hf * 8;
    if (r >= SQ) continue;
    #pragma unroll
    for (int d = 0; d < NDK; ++d)
      *reinterpret_cast<tsr_f2*>(p.dq + qbase + r * Q_SS + d * 8 + 2 * t4) = tsr_f2{dq[d][2 * hf], dq[d][2 * hf + 1]};
  }
}
`;
  return { source, shared: [dkdvShared, dqShared], threads };
}
