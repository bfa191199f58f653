import type { AttentionSpec } from '@tessera/core';
import {
  capturedFields,
  type KernelEntry,
  modulePrelude,
  type ParamField,
  paramStruct,
  roundUp,
  scoreFunctions,
  shapeConstants,
} from './common.js';

/** Tile shape of the tensor-core kernel: BM query rows (16 per warp) × BN keys per step. */
export interface MmaTiling {
  readonly blockQ: number;
  readonly blockKV: number;
}

/** Parameters of every softmax attention kernel (the simt path uses the same struct). */
export function softmaxParams(spec: AttentionSpec): ParamField[] {
  const elem = spec.dtype === 'f32' ? 'float' : 'unsigned short';
  return [
    { name: 'q', type: 'ptr', ctype: `const ${elem}* __restrict__` },
    { name: 'k', type: 'ptr', ctype: `const ${elem}* __restrict__` },
    { name: 'v', type: 'ptr', ctype: `const ${elem}* __restrict__` },
    { name: 'out', type: 'ptr', ctype: `${elem}* __restrict__` },
    { name: 'lse', type: 'ptr', ctype: 'float* __restrict__' },
    { name: 'row_start', type: 'ptr', ctype: 'const int* __restrict__' },
    { name: 'kv_blocks', type: 'ptr', ctype: 'const int* __restrict__' },
    { name: 'full', type: 'ptr', ctype: 'const unsigned char* __restrict__' },
    ...capturedFields(spec),
    { name: 'layout_batches', type: 'i32', ctype: 'int' },
    { name: 'layout_heads', type: 'i32', ctype: 'int' },
  ];
}

/** Whether the tensor-core path can take this spec (16-bit inputs, 16-byte aligned rows). */
export function mmaEligible(spec: AttentionSpec): boolean {
  return (
    spec.dtype !== 'f32' &&
    spec.headDim % 8 === 0 &&
    spec.headDimV % 8 === 0 &&
    spec.headDim <= 256 &&
    spec.headDimV <= 256
  );
}

/** Default tiles: 128×64 with 8 warps for head dims up to 128, 64×32 with 4 warps above. */
export function defaultMmaTiling(spec: AttentionSpec): MmaTiling {
  const wide = Math.max(roundUp(spec.headDim, 16), roundUp(spec.headDimV, 16)) > 128;
  return wide ? { blockQ: 64, blockKV: 32 } : { blockQ: 128, blockKV: 64 };
}

export function mmaSharedBytes(spec: AttentionSpec, t: MmaTiling): number {
  const ldq = roundUp(spec.headDim, 16) + 8;
  const ldv = roundUp(spec.headDimV, 16) + 8;
  return 2 * (t.blockQ * ldq + 2 * t.blockKV * ldq + 2 * t.blockKV * ldv);
}

/**
 * FlashAttention-2 style forward kernel on tensor cores (sm_80+): each warp owns 16 query rows;
 * S = Q·Kᵀ and O += P·V by mma.sync m16n8k16 (bf16/f16 in, f32 accumulate) with operands read by
 * ldmatrix; K/V tiles stream through a two-stage cp.async pipeline; online softmax in base 2. It
 * walks the CSR block layout, so skipped blocks cost nothing, and evaluates the mask only in
 * partial blocks (sequence bounds only in the last KV block when Skv is not a multiple of BN).
 */
export function emitFlashMma(
  spec: AttentionSpec,
  tiling: MmaTiling,
  kernelName: string,
): {
  source: string;
  entry: KernelEntry;
} {
  const { blockQ: BM, blockKV: BN } = tiling;
  if (BM % 16 !== 0 || BM < 16 || BM > 128)
    throw new Error(`blockQ ${BM} must be 16..128, a multiple of 16`);
  if (BN % 16 !== 0 || BN < 16 || BN > 128)
    throw new Error(`blockKV ${BN} must be 16..128, a multiple of 16`);
  const DP = roundUp(spec.headDim, 16);
  const DVP = roundUp(spec.headDimV, 16);
  const threads = (BM / 16) * 32;
  const params = softmaxParams(spec);
  const qInRegs = DP <= 128;
  const hasMask = spec.mask !== null;
  const tail = spec.seqKV % BN !== 0;
  const mmaType = spec.dtype === 'bf16' ? 'bf16' : 'f16';
  const sharedBytes = mmaSharedBytes(spec, tiling);

  const source = `${modulePrelude(spec)}

${shapeConstants(spec)}
constexpr int BM = ${BM}, BN = ${BN}, NWARPS = ${BM / 16}, NTHREADS = ${threads};
constexpr int DP = ${DP}, DVP = ${DVP};              // head dims padded to the mma k/n step
constexpr int LDQ = DP + 8, LDK = DP + 8, LDV = DVP + 8; // smem row strides (halves): +16 B kills ldmatrix bank conflicts
constexpr int NQB = ${Math.ceil(spec.seqQ / BM)}, NKB = ${Math.ceil(spec.seqKV / BN)};
constexpr int NT = BN / 8, ND = DVP / 8, KS = DP / 16;

${paramStruct('TsrParams', params)}

${scoreFunctions(spec, 'TsrParams')}

__device__ __forceinline__ unsigned tsr_smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ void tsr_cp_async16(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(tsr_smem_addr(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void tsr_cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void tsr_cp_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N)); }

__device__ __forceinline__ void tsr_ldsm_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(tsr_smem_addr(p)));
}
__device__ __forceinline__ void tsr_ldsm_x4_t(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(tsr_smem_addr(p)));
}
__device__ __forceinline__ void tsr_mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.${mmaType}.${mmaType}.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats to one register of two 16-bit values: lo in bits 0-15, hi in 16-31.
__device__ __forceinline__ unsigned tsr_pack2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.${mmaType}x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float tsr_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// Copies rows [row0, row0 + ROWS) of a [rows x COLS] global matrix (row stride in elements) into a
// smem tile with row stride LD; rows past \`rows\` and 16-byte chunks past COLS are zero-filled.
template <int ROWS, int COLS_PADDED, int COLS, int LD>
__device__ __forceinline__ void tsr_load_tile(tsr_elem* dst, const tsr_elem* src, int row0, int rows,
                                              long long stride, int tid) {
  constexpr int CPR = COLS_PADDED / 8;
  #pragma unroll
  for (int c = tid; c < ROWS * CPR; c += NTHREADS) {
    const int r = c / CPR, ch = c % CPR;
    const bool ok = row0 + r < rows && ch * 8 < COLS;
    const tsr_elem* g = ok ? src + (long long)(row0 + r) * stride + ch * 8 : src;
    tsr_cp_async16(dst + r * LD + ch * 8, g, ok ? 16 : 0);
  }
}

// Base-2 logits of this thread's 16x8 fragments: scale and score modification, then the mask
// (partial blocks only) and the sequence bound (the last KV block only, when it is short).
template <bool MASKED, bool BOUNDED>
__device__ __forceinline__ void tsr_logits(float (&s)[NT][4], int b, int h, int qrow, int kv0, const TsrParams& p) {
  #pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q = qrow + (i >> 1) * 8;
      const int kv = kv0 + nt * 8 + (i & 1);
      float x = tsr_logit2(s[nt][i], b, h, q, kv, p);
${hasMask ? '      if (MASKED && !tsr_mask(b, h, q, kv, p)) x = TSR_NEG_INF;\n' : ''}      if (BOUNDED && kv >= SKV) x = TSR_NEG_INF;
      s[nt][i] = x;
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS) ${kernelName}(const TsrParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  tsr_elem* sQ = reinterpret_cast<tsr_elem*>(tsr_smem);
  tsr_elem* sK = sQ + BM * LDQ;        // [2][BN][LDK]
  tsr_elem* sV = sK + 2 * BN * LDK;    // [2][BN][LDV]

  const int qb = NQB - 1 - (int)blockIdx.x;  // longest rows (causal) start first
  const int h = blockIdx.y, b = blockIdx.z, hk = h / GROUP;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qb * BM;
  const tsr_elem* qp = p.q + b * Q_SB + h * Q_SH;
  const tsr_elem* kp = p.k + b * K_SB + hk * K_SH;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  const int row = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * NQB + qb;
  const int e0 = p.row_start[row], e1 = p.row_start[row + 1];

  tsr_load_tile<BM, DP, D, LDQ>(sQ, qp, q0, SQ, Q_SS, tid);
  tsr_cp_commit();
  if (e0 < e1) {
    const int j = p.kv_blocks[e0];
    tsr_load_tile<BN, DP, D, LDK>(sK, kp, j * BN, SKV, K_SS, tid);
    tsr_load_tile<BN, DVP, DV, LDV>(sV, vp, j * BN, SKV, V_SS, tid);
  }
  tsr_cp_commit();

  float o[ND][4];
  #pragma unroll
  for (int d = 0; d < ND; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m0 = TSR_NEG_INF, m1 = TSR_NEG_INF, l0 = 0.f, l1 = 0.f;
  const int qrow = q0 + warp * 16 + g;
${qInRegs ? '  unsigned qf[KS][4];\n' : ''}
  for (int e = e0; e < e1; ++e) {
    const int st = (e - e0) & 1;
    if (e + 1 < e1) {
      const int jn = p.kv_blocks[e + 1];
      tsr_load_tile<BN, DP, D, LDK>(sK + (st ^ 1) * BN * LDK, kp, jn * BN, SKV, K_SS, tid);
      tsr_load_tile<BN, DVP, DV, LDV>(sV + (st ^ 1) * BN * LDV, vp, jn * BN, SKV, V_SS, tid);
      tsr_cp_commit();
      tsr_cp_wait<1>();
    } else {
      tsr_cp_wait<0>();
    }
    __syncthreads();
    const tsr_elem* tK = sK + st * BN * LDK;
    const tsr_elem* tV = sV + st * BN * LDV;
${
  qInRegs
    ? `    if (e == e0) {
      #pragma unroll
      for (int ks = 0; ks < KS; ++ks) tsr_ldsm_x4(qf[ks], sQ + (warp * 16 + (lane & 15)) * LDQ + ks * 16 + (lane >> 4) * 8);
    }
`
    : ''
}
    // S = Q K^T for this warp's 16 rows
    float s[NT][4];
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    #pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
${
  qInRegs
    ? '      const unsigned (&a)[4] = qf[ks];\n'
    : '      unsigned a[4];\n      tsr_ldsm_x4(a, sQ + (warp * 16 + (lane & 15)) * LDQ + ks * 16 + (lane >> 4) * 8);\n'
}      #pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        unsigned bk[4];
        tsr_ldsm_x4(bk, tK + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDK + ks * 16 + ((lane >> 3) & 1) * 8);
        tsr_mma(s[2 * np], a, bk[0], bk[1]);
        tsr_mma(s[2 * np + 1], a, bk[2], bk[3]);
      }
    }

    const int j = p.kv_blocks[e];
    const int kv0 = j * BN + 2 * t4;
${dispatchLogits(hasMask, tail)}

    // online softmax: rows qrow (i = 0, 1) and qrow + 8 (i = 2, 3); a row lives in one quad
    float mx0 = m0, mx1 = m1;
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // A row with nothing unmasked yet keeps max -inf: subtract 0 so exp2(-inf) = 0, never NaN.
    const float base0 = mx0 == TSR_NEG_INF ? 0.f : mx0;
    const float base1 = mx1 == TSR_NEG_INF ? 0.f : mx1;
    const float alpha0 = tsr_exp2(m0 - base0), alpha1 = tsr_exp2(m1 - base1);
    m0 = mx0;
    m1 = mx1;
    float rs0 = 0.f, rs1 = 0.f;
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][0] = tsr_exp2(s[nt][0] - base0);
      s[nt][1] = tsr_exp2(s[nt][1] - base0);
      s[nt][2] = tsr_exp2(s[nt][2] - base1);
      s[nt][3] = tsr_exp2(s[nt][3] - base1);
      rs0 += s[nt][0] + s[nt][1];
      rs1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * alpha0 + rs0;
    l1 = l1 * alpha1 + rs1;
    #pragma unroll
    for (int d = 0; d < ND; ++d) {
      o[d][0] *= alpha0; o[d][1] *= alpha0;
      o[d][2] *= alpha1; o[d][3] *= alpha1;
    }

    // O += P V: the S accumulators of two adjacent n-tiles are the A fragment of one k-step
    #pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const unsigned pa[4] = {tsr_pack2(s[2 * kk][0], s[2 * kk][1]), tsr_pack2(s[2 * kk][2], s[2 * kk][3]),
                              tsr_pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]), tsr_pack2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      #pragma unroll
      for (int dp = 0; dp < ND / 2; ++dp) {
        unsigned bv[4];
        tsr_ldsm_x4_t(bv, tV + (kk * 16 + (lane & 15)) * LDV + dp * 16 + (lane >> 4) * 8);
        tsr_mma(o[2 * dp], pa, bv[0], bv[1]);
        tsr_mma(o[2 * dp + 1], pa, bv[2], bv[3]);
      }
    }
    __syncthreads();  // this stage is refilled two iterations on
  }
  tsr_cp_wait<0>();

  // epilogue: normalise, write out (0 for rows with no unmasked key) and the natural-log LSE
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  tsr_elem* op = p.out + b * O_SB + h * O_SH;
  #pragma unroll
  for (int d = 0; d < ND; ++d) {
    const int col = d * 8 + 2 * t4;
    if (col < DV) {
      if (qrow < SQ)
        *reinterpret_cast<unsigned*>(op + qrow * O_SS + col) = tsr_pack2(o[d][0] * inv0, o[d][1] * inv0);
      if (qrow + 8 < SQ)
        *reinterpret_cast<unsigned*>(op + (qrow + 8) * O_SS + col) = tsr_pack2(o[d][2] * inv1, o[d][3] * inv1);
    }
  }
  if (t4 == 0) {
    float* lp = p.lse + (long long)(b * HQ + h) * SQ;
    if (qrow < SQ) lp[qrow] = l0 > 0.f ? (m0 + log2f(l0)) * TSR_LN2 : TSR_NEG_INF;
    if (qrow + 8 < SQ) lp[qrow + 8] = l1 > 0.f ? (m1 + log2f(l1)) * TSR_LN2 : TSR_NEG_INF;
  }
}
`;
  return { source, entry: { name: kernelName, threads, dynamicSharedBytes: sharedBytes, params } };
}

function dispatchLogits(hasMask: boolean, tail: boolean): string {
  const call = (m: boolean, bd: boolean) => `tsr_logits<${m}, ${bd}>(s, b, h, qrow, kv0, p);`;
  const bounded = tail ? 'j == NKB - 1' : 'false';
  if (!hasMask && !tail) return `    ${call(false, false)}`;
  if (!hasMask) return `    if (${bounded}) ${call(false, true)}\n    else ${call(false, false)}`;
  const full = 'p.full[e]';
  if (!tail) return `    if (${full}) ${call(false, false)}\n    else ${call(true, false)}`;
  return `    const bool bounded = ${bounded};
    if (${full}) { if (bounded) ${call(false, true)} else ${call(false, false)} }
    else { if (bounded) ${call(true, true)} else ${call(true, false)} }`;
}
