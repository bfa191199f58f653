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
  /** 16-row m-tiles per warp (1 or 2): 2 halves the K/V fragment reads per FLOP, costs registers. */
  readonly warpTiles: 1 | 2;
  /**
   * Block order. 'grid' (the first kernel): grid (q-blocks, heads, batch), each head's q-blocks
   * from the last to the first. 'lpt' (longest processing time first): a 1-D grid with heads
   * fastest over q-blocks sorted by their number of KV blocks (`q_order`, see qBlockOrder), so the
   * long rows of every head (BigBird's global rows, causal's last rows) start in the first wave
   * instead of ending the grid.
   */
  readonly schedule?: 'grid' | 'lpt';
  /** Rescale O only when some row's running max moved (exact: skips multiplications by 1). */
  readonly lazyRescale?: boolean;
}

/** Parameters of every softmax attention kernel (the simt path uses the same struct). */
export function softmaxParams(spec: AttentionSpec, order = false): ParamField[] {
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
    ...(order ? [{ name: 'q_order', type: 'ptr', ctype: 'const int* __restrict__' } as const] : []),
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
/**
 * Default tiles: 128 query rows on 4 warps of 32 rows each (FlashAttention-2's shape) with 64 keys
 * per step for head dims up to 64 and 32 above (64 keys at 128 spills registers); for head dims
 * above 128, 64 rows on 4 warps of 16 rows and 32 keys.
 */
export function defaultMmaTiling(spec: AttentionSpec): MmaTiling {
  const dim = Math.max(roundUp(spec.headDim, 16), roundUp(spec.headDimV, 16));
  if (dim > 128) return { blockQ: 64, blockKV: 32, warpTiles: 1 };
  return { blockQ: 128, blockKV: dim > 64 ? 32 : 64, warpTiles: 2 };
}

export function mmaSharedBytes(spec: AttentionSpec, t: MmaTiling): number {
  const ldq = roundUp(spec.headDim, 16) + 8;
  const ldv = roundUp(spec.headDimV, 16) + 8;
  return 2 * (t.blockQ * ldq + 2 * t.blockKV * ldq + 2 * t.blockKV * ldv);
}

/** The PTX helpers of the tensor-core kernels (cp.async, ldmatrix, mma.sync, packing, ex2). */
export function mmaPtxHelpers(mmaType: 'bf16' | 'f16'): string {
  return `// <tsr-ptx> PTX helpers (tests swap this block for a host emulation)
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
// </tsr-ptx>
`;
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
  const { blockQ: BM, blockKV: BN, warpTiles: MT } = tiling;
  const WR = 16 * MT;
  if (BM % WR !== 0 || BM < WR || BM > 128)
    throw new Error(`blockQ ${BM} must be ${WR}..128, a multiple of ${WR}`);
  if (BN % 16 !== 0 || BN < 16 || BN > 128)
    throw new Error(`blockKV ${BN} must be 16..128, a multiple of 16`);
  const DP = roundUp(spec.headDim, 16);
  const DVP = roundUp(spec.headDimV, 16);
  const threads = (BM / WR) * 32;
  const lpt = tiling.schedule === 'lpt';
  const lazy = tiling.lazyRescale === true;
  const params = softmaxParams(spec, lpt);
  const qInRegs = MT === 1 && DP <= 128;
  const hasMask = spec.mask !== null;
  const tail = spec.seqKV % BN !== 0;
  const mmaType = spec.dtype === 'bf16' ? 'bf16' : 'f16';
  const sharedBytes = mmaSharedBytes(spec, tiling);

  const source = `${modulePrelude(spec)}

${shapeConstants(spec)}
constexpr int BM = ${BM}, BN = ${BN}, MT = ${MT}, WROWS = 16 * MT, NWARPS = BM / WROWS, NTHREADS = ${threads};
constexpr int DP = ${DP}, DVP = ${DVP};              // head dims padded to the mma k/n step
constexpr int LDQ = DP + 8, LDK = DP + 8, LDV = DVP + 8; // smem row strides (halves): +16 B kills ldmatrix bank conflicts
constexpr int NQB = ${Math.ceil(spec.seqQ / BM)}, NKB = ${Math.ceil(spec.seqKV / BN)};
constexpr int NT = BN / 8, ND = DVP / 8, KS = DP / 16;
constexpr bool QTAIL = SQ % BM != 0, KVTAIL = SKV % BN != 0;  // row bounds only where a tile can be short

${paramStruct('TsrParams', params)}

${scoreFunctions(spec, 'TsrParams')}

${mmaPtxHelpers(mmaType)}
// Copies rows [row0, row0 + ROWS) of a [rows x COLS] global matrix (row stride in elements) into a
// smem tile with row stride LD; rows past \`rows\` (checked only when CHECK_ROWS) and 16-byte chunks
// past COLS are zero-filled. A compile-time trip count with no bounds checks where none are needed;
// kept rolled (unrolling hoists one address per chunk into registers the mma loop needs).
template <int ROWS, int COLS_PADDED, int COLS, int LD, bool CHECK_ROWS>
__device__ __forceinline__ void tsr_load_tile(tsr_elem* dst, const tsr_elem* src, int row0, int rows,
                                              long long stride, int tid) {
  constexpr int CPR = COLS_PADDED / 8, CHUNKS = ROWS * CPR, ITERS = (CHUNKS + NTHREADS - 1) / NTHREADS;
  #pragma unroll 1
  for (int i = 0; i < ITERS; ++i) {
    const int c = tid + i * NTHREADS;
    if (CHUNKS % NTHREADS != 0 && c >= CHUNKS) break;
    const int r = c / CPR, ch = c % CPR;
    const bool ok = (!CHECK_ROWS || row0 + r < rows) && (COLS_PADDED == COLS || ch * 8 < COLS);
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

${
  lpt
    ? `  // 1-D grid, heads fastest, q-blocks longest row first (q_order): the long rows start in the first wave
  const int hb = (int)(blockIdx.x % (unsigned)(HQ * BATCH));
  const int qb = p.q_order[blockIdx.x / (unsigned)(HQ * BATCH)];
  const int h = hb % HQ, b = hb / HQ, hk = h / GROUP;`
    : `  const int qb = NQB - 1 - (int)blockIdx.x;  // longest rows (causal) start first
  const int h = blockIdx.y, b = blockIdx.z, hk = h / GROUP;`
}
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qb * BM;
  const tsr_elem* qp = p.q + b * Q_SB + h * Q_SH;
  const tsr_elem* kp = p.k + b * K_SB + hk * K_SH;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  const int row = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * NQB + qb;
  const int e0 = p.row_start[row], e1 = p.row_start[row + 1];

  tsr_load_tile<BM, DP, D, LDQ, QTAIL>(sQ, qp, q0, SQ, Q_SS, tid);
  tsr_cp_commit();
  if (e0 < e1) {
    const int j = p.kv_blocks[e0];
    tsr_load_tile<BN, DP, D, LDK, KVTAIL>(sK, kp, j * BN, SKV, K_SS, tid);
    tsr_load_tile<BN, DVP, DV, LDV, KVTAIL>(sV, vp, j * BN, SKV, V_SS, tid);
  }
  tsr_cp_commit();

  // Each warp owns MT m-tiles of 16 rows: rows qrow + mt * 16 (fragment i = 0, 1) and + 8 (i = 2, 3).
  float o[MT][ND][4];
  float mr[MT][2], lr[MT][2];
  #pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    mr[mt][0] = mr[mt][1] = TSR_NEG_INF;
    lr[mt][0] = lr[mt][1] = 0.f;
    #pragma unroll
    for (int d = 0; d < ND; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
  }
  const int qrow = q0 + warp * WROWS + g;
  const tsr_elem* sQw = sQ + (warp * WROWS + (lane & 15)) * LDQ + (lane >> 4) * 8;  // this lane's ldmatrix row
${qInRegs ? '  unsigned qf[KS][4];\n' : ''}
  for (int e = e0; e < e1; ++e) {
    const int st = (e - e0) & 1;
    if (e + 1 < e1) {
      const int jn = p.kv_blocks[e + 1];
      tsr_load_tile<BN, DP, D, LDK, KVTAIL>(sK + (st ^ 1) * BN * LDK, kp, jn * BN, SKV, K_SS, tid);
      tsr_load_tile<BN, DVP, DV, LDV, KVTAIL>(sV + (st ^ 1) * BN * LDV, vp, jn * BN, SKV, V_SS, tid);
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
      for (int ks = 0; ks < KS; ++ks) tsr_ldsm_x4(qf[ks], sQw + ks * 16);
    }
`
    : ''
}
    // S = Q K^T: each K fragment pair feeds all MT m-tiles
    float s[MT][NT][4];
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      #pragma unroll
      for (int nt = 0; nt < NT; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
    #pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned a[MT][4];
      #pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
${
  qInRegs
    ? '        a[mt][0] = qf[ks][0]; a[mt][1] = qf[ks][1]; a[mt][2] = qf[ks][2]; a[mt][3] = qf[ks][3];\n'
    : '        tsr_ldsm_x4(a[mt], sQw + mt * 16 * LDQ + ks * 16);\n'
}      }
      #pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        unsigned bk[4];
        tsr_ldsm_x4(bk, tK + (np * 16 + ((lane >> 4) << 3) + (lane & 7)) * LDK + ks * 16 + ((lane >> 3) & 1) * 8);
        #pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          tsr_mma(s[mt][2 * np], a[mt], bk[0], bk[1]);
          tsr_mma(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    const int j = p.kv_blocks[e];
    const int kv0 = j * BN + 2 * t4;
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
${dispatchLogits(hasMask, tail)}
    }

    // online softmax; a row lives in one quad (4 lanes). P is packed to 16 bits as soon as it is
    // computed (half the registers of the f32 scores through the P·V loop).
    unsigned pk[MT][NT][2];
${lazy ? '    float al[MT][2];\n' : ''}    #pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      #pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = mr[mt][hf];
        #pragma unroll
        for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row with nothing unmasked yet keeps max -inf: subtract 0 so exp2(-inf) = 0, never NaN.
        const float base = mx == TSR_NEG_INF ? 0.f : mx;
        const float alpha = tsr_exp2(mr[mt][hf] - base);
        mr[mt][hf] = mx;
        float rs = 0.f;
        #pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const float p0 = tsr_exp2(s[mt][nt][2 * hf] - base), p1 = tsr_exp2(s[mt][nt][2 * hf + 1] - base);
          pk[mt][nt][hf] = tsr_pack2(p0, p1);
          rs += p0 + p1;
        }
        lr[mt][hf] = lr[mt][hf] * alpha + rs;
${
  lazy
    ? `        al[mt][hf] = alpha;
      }
    }
    // Most steps leave every running max where it was (alpha exactly 1): skip those multiplications.
    bool moved = false;
    #pragma unroll
    for (int mt = 0; mt < MT; ++mt) moved = moved || al[mt][0] != 1.f || al[mt][1] != 1.f;
    if (moved) {
      #pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        #pragma unroll
        for (int d = 0; d < ND; ++d) {
          o[mt][d][0] *= al[mt][0];
          o[mt][d][1] *= al[mt][0];
          o[mt][d][2] *= al[mt][1];
          o[mt][d][3] *= al[mt][1];
        }
      }
    }
`
    : `        #pragma unroll
        for (int d = 0; d < ND; ++d) {
          o[mt][d][2 * hf] *= alpha;
          o[mt][d][2 * hf + 1] *= alpha;
        }
      }
    }
`
}
    // O += P V: the P fragments of two adjacent n-tiles are the A fragment of one k-step
    #pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      unsigned pf[MT][4];
      #pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pf[mt][0] = pk[mt][2 * kk][0];
        pf[mt][1] = pk[mt][2 * kk][1];
        pf[mt][2] = pk[mt][2 * kk + 1][0];
        pf[mt][3] = pk[mt][2 * kk + 1][1];
      }
      #pragma unroll
      for (int dp = 0; dp < ND / 2; ++dp) {
        unsigned bv[4];
        tsr_ldsm_x4_t(bv, tV + (kk * 16 + (lane & 15)) * LDV + dp * 16 + (lane >> 4) * 8);
        #pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          tsr_mma(o[mt][2 * dp], pf[mt], bv[0], bv[1]);
          tsr_mma(o[mt][2 * dp + 1], pf[mt], bv[2], bv[3]);
        }
      }
    }
    __syncthreads();  // this stage is refilled two iterations on
  }
  tsr_cp_wait<0>();

  // epilogue: normalise, write out (0 for rows with no unmasked key) and the natural-log LSE
  tsr_elem* op = p.out + b * O_SB + h * O_SH;
  float* lp = p.lse + (long long)(b * HQ + h) * SQ;
  #pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    #pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = lr[mt][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int r = qrow + mt * 16 + hf * 8;
      if (r < SQ) {
        #pragma unroll
        for (int d = 0; d < ND; ++d) {
          const int col = d * 8 + 2 * t4;
          if (col < DV)
            *reinterpret_cast<unsigned*>(op + r * O_SS + col) = tsr_pack2(o[mt][d][2 * hf] * inv, o[mt][d][2 * hf + 1] * inv);
        }
        if (t4 == 0) lp[r] = l > 0.f ? (mr[mt][hf] + log2f(l)) * TSR_LN2 : TSR_NEG_INF;
      }
    }
  }
}
`;
  return { source, entry: { name: kernelName, threads, dynamicSharedBytes: sharedBytes, params } };
}

function dispatchLogits(hasMask: boolean, tail: boolean): string {
  const call = (m: boolean, bd: boolean) =>
    `tsr_logits<${m}, ${bd}>(s[mt], b, h, qrow + mt * 16, kv0, p);`;
  const bounded = tail ? 'j == NKB - 1' : 'false';
  const ind = '      ';
  if (!hasMask && !tail) return `${ind}${call(false, false)}`;
  if (!hasMask)
    return `${ind}if (${bounded}) ${call(false, true)}\n${ind}else ${call(false, false)}`;
  const full = 'p.full[e]';
  if (!tail) return `${ind}if (${full}) ${call(false, false)}\n${ind}else ${call(true, false)}`;
  return `${ind}const bool bounded = ${bounded};
${ind}if (${full}) { if (bounded) ${call(false, true)} else ${call(false, false)} }
${ind}else { if (bounded) ${call(true, true)} else ${call(true, false)} }`;
}
