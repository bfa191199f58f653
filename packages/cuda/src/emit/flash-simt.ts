import type { AttentionSpec } from '@tessera/core';
import {
  type KernelEntry,
  modulePrelude,
  paramStruct,
  scoreFunctions,
  shapeConstants,
} from './common.js';
import { softmaxParams } from './flash-mma.js';

/** The CUDA-core path's key block: one key per lane. */
export const SIMT_BLOCK_KV = 32;
const WARPS = 4;

/** Query rows per warp: as many as keep the per-thread accumulators at about 32 registers. */
export function simtRowsPerWarp(spec: AttentionSpec): number {
  const nc = Math.ceil(spec.headDimV / 32);
  return Math.max(1, Math.min(4, Math.floor(16 / nc)));
}

export const defaultSimtTiling = (spec: AttentionSpec) => ({
  blockQ: WARPS * simtRowsPerWarp(spec),
  blockKV: SIMT_BLOCK_KV,
});

export function simtSharedBytes(spec: AttentionSpec, blockQ: number): number {
  const ldk = spec.headDim | 1;
  const nc = Math.ceil(spec.headDimV / 32);
  return 4 * (blockQ * spec.headDim + SIMT_BLOCK_KV * ldk + SIMT_BLOCK_KV * nc * 32);
}

/**
 * Flash attention on CUDA cores, f32 arithmetic throughout: the path for f32 specs (and for
 * 16-bit specs whose head dims the tensor-core path cannot take). A warp owns RPW query rows;
 * lane i computes the score of key i of the 32-key block, so row max and sum are warp shuffles,
 * and each lane accumulates output columns lane, lane + 32, ... Same layout walk and -inf rules
 * as the tensor-core kernel; exp2f here is the accurate one.
 */
export function emitFlashSimt(
  spec: AttentionSpec,
  blockQ: number,
  kernelName: string,
): { source: string; entry: KernelEntry } {
  const rpw = blockQ / WARPS;
  if (!Number.isInteger(rpw) || rpw < 1 || rpw > 16)
    throw new Error(`blockQ ${blockQ} must be 4 × (1..16) on the CUDA-core path`);
  const nc = Math.ceil(spec.headDimV / 32);
  const params = softmaxParams(spec);
  const threads = WARPS * 32;
  const hasMask = spec.mask !== null;
  const tail = spec.seqKV % SIMT_BLOCK_KV !== 0;
  const logits = (masked: boolean, bounded: boolean) => {
    const lines = ['x = tsr_logit2(dot, b, h, q, kv, p);'];
    if (masked) lines.push('if (!tsr_mask(b, h, q, kv, p)) x = TSR_NEG_INF;');
    if (bounded) lines.push('if (kv >= SKV) x = TSR_NEG_INF;');
    return lines.join(' ');
  };
  let pick: string;
  if (!hasMask && !tail) pick = logits(false, false);
  else if (!hasMask) pick = logits(false, true);
  else if (!tail) pick = `if (full) { ${logits(false, false)} } else { ${logits(true, false)} }`;
  else pick = `if (full) { ${logits(false, true)} } else { ${logits(true, true)} }`;

  const source = `${modulePrelude(spec)}

${shapeConstants(spec)}
constexpr int RPW = ${rpw}, NWARPS = ${WARPS}, NTHREADS = ${threads}, BM = ${blockQ}, BN = ${SIMT_BLOCK_KV};
constexpr int NC = ${nc};            // output columns per lane: lane, lane + 32, ...
constexpr int LDK = ${spec.headDim | 1};          // odd row stride: lanes read different banks
constexpr int LDV = NC * 32;
constexpr int NQB = ${Math.ceil(spec.seqQ / blockQ)};

${paramStruct('TsrParams', params)}

${scoreFunctions(spec, 'TsrParams')}

extern "C" __global__ void __launch_bounds__(NTHREADS) ${kernelName}(const TsrParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sQ = reinterpret_cast<float*>(tsr_smem);  // [BM][D]
  float* sK = sQ + BM * D;                          // [BN][LDK]
  float* sV = sK + BN * LDK;                        // [BN][LDV]

  const int qb = NQB - 1 - (int)blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / GROUP;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int q0 = qb * BM;
  const tsr_elem* qp = p.q + b * Q_SB + h * Q_SH;
  const tsr_elem* kp = p.k + b * K_SB + hk * K_SH;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  const int row = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * NQB + qb;
  const int e0 = p.row_start[row], e1 = p.row_start[row + 1];

  for (int i = tid; i < BM * D; i += NTHREADS) {
    const int r = i / D, d = i % D;
    sQ[i] = q0 + r < SQ ? tsr_to_f32(qp[(q0 + r) * Q_SS + d]) : 0.f;
  }
  float acc[RPW][NC], m[RPW], l[RPW];
  #pragma unroll
  for (int r = 0; r < RPW; ++r) {
    m[r] = TSR_NEG_INF;
    l[r] = 0.f;
    #pragma unroll
    for (int c = 0; c < NC; ++c) acc[r][c] = 0.f;
  }

  for (int e = e0; e < e1; ++e) {
    const int j = p.kv_blocks[e];
    const bool full = p.full[e];
    (void)full;
    __syncthreads();  // the previous block's tiles are consumed (and sQ is written, first time)
    for (int i = tid; i < BN * D; i += NTHREADS) {
      const int r = i / D, d = i % D, kv = j * BN + r;
      sK[r * LDK + d] = kv < SKV ? tsr_to_f32(kp[kv * K_SS + d]) : 0.f;
    }
    for (int i = tid; i < BN * LDV; i += NTHREADS) {
      const int r = i / LDV, d = i % LDV, kv = j * BN + r;
      sV[i] = kv < SKV && d < DV ? tsr_to_f32(vp[kv * V_SS + d]) : 0.f;
    }
    __syncthreads();
    const int kv = j * BN + lane;
    #pragma unroll
    for (int r = 0; r < RPW; ++r) {
      const int ql = warp * RPW + r, q = q0 + ql;
      const float* qr = sQ + ql * D;
      const float* kr = sK + lane * LDK;
      float dot = 0.f;
      #pragma unroll 4
      for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
      float x;
      ${pick}
      float mx = x;
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float mn = fmaxf(m[r], mx);
      const float base = mn == TSR_NEG_INF ? 0.f : mn;  // nothing unmasked yet: exp2(-inf) = 0
      const float alpha = exp2f(m[r] - base);
      const float pr = exp2f(x - base);
      float sum = pr;
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      l[r] = l[r] * alpha + sum;
      m[r] = mn;
      #pragma unroll
      for (int c = 0; c < NC; ++c) acc[r][c] *= alpha;
      #pragma unroll 4
      for (int jj = 0; jj < BN; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, pr, jj);
        #pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = fmaf(pj, sV[jj * LDV + c * 32 + lane], acc[r][c]);
      }
    }
  }

  tsr_elem* op = p.out + b * O_SB + h * O_SH;
  float* lp = p.lse + (long long)(b * HQ + h) * SQ;
  #pragma unroll
  for (int r = 0; r < RPW; ++r) {
    const int q = q0 + warp * RPW + r;
    if (q >= SQ) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    #pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = c * 32 + lane;
      if (d < DV) op[q * O_SS + d] = tsr_from_f32(acc[r][c] * inv);
    }
    if (lane == 0) lp[q] = l[r] > 0.f ? (m[r] + log2f(l[r])) * TSR_LN2 : TSR_NEG_INF;
  }
}
`;
  return {
    source,
    entry: {
      name: kernelName,
      threads,
      dynamicSharedBytes: simtSharedBytes(spec, blockQ),
      params,
    },
  };
}
