import { type AttentionSpec, ceilDiv } from '@tessera/core';
import { lowerExprs } from '@tessera/core/backend';
import {
  capturedFields,
  GENERATOR_VERSION,
  type KernelEntry,
  modulePrelude,
  type ParamField,
  paramStruct,
  scoreFunctions,
  shapeConstants,
  storageType,
} from '../emit/common.js';
import { cudaRenderer, floatLiteral } from '../expr-cuda.js';
import { type BackwardPlan, PRE_ROWS_PER_CTA } from './plan.js';
import { emitMmaBackward, type TermCode } from './softmax-mma.js';

/** Fractional bits of the 64-bit fixed-point accumulators of scattered tensor gradients. */
export const FIX_BITS = 30;
const SIMT_THREADS = 128;

/** A generated backward module: one source, its kernels, and the buffers it needs. */
export interface BackwardModule {
  readonly source: string;
  readonly pre: KernelEntry;
  readonly dkdv: KernelEntry;
  readonly dq: KernelEntry;
  /** The tensor-gradient reduction, when the score modification reads a captured f32 tensor. */
  readonly grads: KernelEntry | null;
  /** All kernels, in the order above (for loading). */
  readonly kernels: readonly KernelEntry[];
  readonly generatorVersion: number;
}

/** The parameter struct every kernel of a backward module takes. */
export function backwardParams(spec: AttentionSpec, gradSlots: readonly number[]): ParamField[] {
  const elem = storageType(spec.dtype);
  const ptr = (name: string, ctype: string): ParamField => ({ name, type: 'ptr', ctype });
  return [
    ptr('q', `const ${elem}* __restrict__`),
    ptr('k', `const ${elem}* __restrict__`),
    ptr('v', `const ${elem}* __restrict__`),
    ptr('out', `const ${elem}* __restrict__`),
    ptr('dout', `const ${elem}* __restrict__`),
    ptr('lse', 'const float* __restrict__'),
    ptr('delta', 'float* __restrict__'),
    ptr('lse2', 'float* __restrict__'),
    ptr('dq', 'float* __restrict__'),
    ptr('dk', 'float* __restrict__'),
    ptr('dv', 'float* __restrict__'),
    ptr('row_start', 'const int* __restrict__'),
    ptr('kv_blocks', 'const int* __restrict__'),
    ptr('full', 'const unsigned char* __restrict__'),
    ptr('col_start', 'const int* __restrict__'),
    ptr('q_blocks', 'const int* __restrict__'),
    ptr('col_full', 'const unsigned char* __restrict__'),
    ...capturedFields(spec),
    ptr('tpart', 'float* __restrict__'),
    ptr('tfix', 'unsigned long long* __restrict__'),
    ...gradSlots.map((s) => ptr(`g${s}`, 'float* __restrict__')),
    { name: 'layout_batches', type: 'i32', ctype: 'int' },
    { name: 'layout_heads', type: 'i32', ctype: 'int' },
  ];
}

/**
 * Device functions of the backward score pipeline: the forward's `tsr_mask` and `tsr_logit2`,
 * and `tsr_bwd_terms`, which returns ∂s'/∂score and fills each captured-tensor term's weight and
 * index (core's scoreModGradient, lowered with shared temporaries), plus, per uniform term, its
 * index as a function of (b, h) for the reduction kernel.
 */
export function backwardScoreFunctions(spec: AttentionSpec, plan: BackwardPlan): string {
  const out = [scoreFunctions(spec, 'TsrBwdParams')];
  const names = {
    vars: { b: 'b', h: 'h', q: 'q', kv: 'kv', score: 'score' },
    tensor: (slot: number) => `p.t${slot}`,
  };
  const unused = '(void)b; (void)h; (void)q; (void)kv; (void)p; (void)score;';
  const ng = plan.terms.length;
  const arrays = ng > 0 ? ', float (&w)[NTERMS], int (&ix)[NTERMS]' : '';
  if (!spec.scoreMod) {
    out.push(`__device__ __forceinline__ float tsr_bwd_terms(float dot, int b, int h, int q, int kv, const TsrBwdParams& p) {
  (void)dot; (void)b; (void)h; (void)q; (void)kv; (void)p;
  return 1.0f;
}`);
    return out.join('\n\n');
  }
  const low = lowerExprs(
    [
      plan.dScore ?? { op: 'const', type: 'f32', value: 1 },
      ...plan.terms.flatMap((t) => [t.index, t.weight]),
    ],
    cudaRenderer(spec.tensors, names),
    { prefix: 'g' },
  );
  const [dScore, ...rest] = low.results;
  const sets = plan.terms.map(
    (_, i) => `  w[${i}] = ${rest[2 * i + 1]?.code}; ix[${i}] = ${rest[2 * i]?.code};`,
  );
  out.push(`// ∂s'/∂score and the captured-tensor terms of '${spec.scoreMod.name}'
__device__ __forceinline__ float tsr_bwd_terms(float dot, int b, int h, int q, int kv, const TsrBwdParams& p${arrays}) {
  const float score = dot * ${floatLiteral(spec.scale)};
  ${unused}
${low.statements.map((s) => `  ${s}`).join('\n')}
${sets.join('\n')}
  return ${dScore?.code};
}`);
  plan.terms.forEach((t, i) => {
    if (t.reduce !== 'uniform') return;
    const li = lowerExprs(
      [t.index],
      cudaRenderer(spec.tensors, {
        vars: { b: 'b', h: 'h', q: '0', kv: '0', score: '0.0f' },
        tensor: (slot: number) => `p.t${slot}`,
      }),
      { prefix: 'u' },
    );
    out.push(`__device__ __forceinline__ int tsr_term_index_${i}(int b, int h, const TsrBwdParams& p) {
  (void)b; (void)h; (void)p;
${li.statements.map((s) => `  ${s}`).join('\n')}
  return ${li.results[0]?.code};
}`);
  });
  return out.join('\n\n');
}

/** Shape constants of the backward module beyond the forward's. */
function backwardConstants(spec: AttentionSpec, plan: BackwardPlan): string {
  const U = plan.terms.filter((t) => t.reduce === 'uniform').length;
  return `${shapeConstants(spec)}
constexpr int BM = ${plan.blockQ}, BN = ${plan.blockKV};
constexpr int NQB = ${ceilDiv(spec.seqQ, plan.blockQ)}, NKB = ${ceilDiv(spec.seqKV, plan.blockKV)};  // dk/dv pass
constexpr int QBM = ${plan.dqBlockQ}, QBN = ${plan.dqBlockKV}, QNQB = ${ceilDiv(spec.seqQ, plan.dqBlockQ)}, QNKB = ${ceilDiv(spec.seqKV, plan.dqBlockKV)};  // dq pass
constexpr int NTERMS = ${Math.max(1, plan.terms.length)}, NUNIFORM = ${Math.max(1, U)};
constexpr float SCALE = ${floatLiteral(spec.scale)};
constexpr double FIX_INV = ${floatLiteral(2 ** -FIX_BITS).replace(/f$/, '')};  // 2^-${FIX_BITS}
constexpr float FIX_SCALE = ${floatLiteral(2 ** FIX_BITS)};  // 2^${FIX_BITS}
constexpr bool DKDV_DESC = ${plan.order.dkdv === 'descending'}, DQ_DESC = ${plan.order.dq === 'descending'};  // longest first

// This CTA's block index, batch and head in a 1-D grid whose block index varies slowest.
template <int NB, int HEADS, bool DESC>
__device__ __forceinline__ void tsr_bwd_cta(int& blk, int& h, int& b) {
  const int i = blockIdx.x, s = i % (BATCH * HEADS), x = i / (BATCH * HEADS);
  blk = DESC ? NB - 1 - x : x;
  h = s % HEADS;
  b = s / HEADS;
}`;
}

/** The pre-pass: D_i = Σ dOut∘out and the base-2 lse (+∞ for a fully masked row: P = 0 there). */
function preKernel(name: string): string {
  return `// D_i = rowsum(dOut ∘ out), one warp per row; lse2 = lse·log2(e), +inf where the row is empty.
extern "C" __global__ void __launch_bounds__(${PRE_ROWS_PER_CTA * 32}) ${name}(const TsrBwdParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int row = blockIdx.x * ${PRE_ROWS_PER_CTA} + warp; row < BATCH * HQ * SQ; row += gridDim.x * ${PRE_ROWS_PER_CTA}) {
  const int q = row % SQ, h = (row / SQ) % HQ, b = row / (SQ * HQ);
  const long long at = b * O_SB + h * O_SH + q * O_SS;
  float s = 0.f;
  for (int d = lane; d < DV; d += 32) s = fmaf(tsr_to_f32(p.dout[at + d]), tsr_to_f32(p.out[at + d]), s);
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) {
    const float l = p.lse[row];
    p.delta[row] = s;
    p.lse2[row] = l == TSR_NEG_INF ? -TSR_NEG_INF : l * TSR_LOG2E;
  }
  }
}`;
}

/** Per-element backward of one (q, kv): P, dS' and dS; live elements only. */
function elementCode(spec: AttentionSpec, plan: BackwardPlan, withTerms: boolean): string {
  const hasMask = spec.mask !== null;
  const live = `q < SQ && kv < SKV${hasMask ? ' && (full || tsr_mask(b, h, q, kv, p))' : ''}`;
  const ng = plan.terms.length;
  const termLines: string[] = [];
  let uniform = 0;
  plan.terms.forEach((t, i) => {
    if (!withTerms) return;
    if (t.reduce === 'uniform') {
      termLines.push(`tacc[${uniform}] = fmaf(dsp, w[${i}], tacc[${uniform}]);`);
      uniform++;
    } else {
      const fixed = plan.fixed.get(t.slot);
      const [off, len] = fixed ?? [0, 0];
      termLines.push(
        `{ const float c = dsp * w[${i}]; if (c != 0.f && (unsigned)ix[${i}] < ${len}u) atomicAdd(p.tfix + ${off} + ix[${i}], (unsigned long long)__float2ll_rn(c * FIX_SCALE)); }`,
      );
    }
  });
  const call =
    ng > 0 ? 'tsr_bwd_terms(dot, b, h, q, kv, p, w, ix)' : 'tsr_bwd_terms(dot, b, h, q, kv, p)';
  return `        float pr = 0.f, ds = 0.f;
        if (${live}) {
          pr = exp2f(tsr_logit2(dot, b, h, q, kv, p) - sL[r]);
          if (pr > 0.f) {  // masked by the score modification (or the row is empty): no gradient
            const float dsp = pr * (dp - sDl[r]);
${ng > 0 ? '            float w[NTERMS]; int ix[NTERMS];\n' : ''}            ds = dsp * ${call} * SCALE;
${termLines.map((l) => `            ${l}`).join('\n')}
          }
        }`;
}

function simtKernels(spec: AttentionSpec, plan: BackwardPlan, names: KernelNames): string {
  const U = plan.terms.filter((t) => t.reduce === 'uniform').length;
  const loadRows = (
    dst: string,
    ld: string,
    src: string,
    cols: string,
    stride: string,
    base: string,
    row0: string,
    limit: string,
    rows: string,
  ) =>
    `for (int i = tid; i < ${rows} * ${cols}; i += NTHREADS) {
      const int r = i / ${cols}, d = i % ${cols}, x = ${row0} + r;
      ${dst}[r * ${ld} + d] = x < ${limit} ? tsr_to_f32(${src}[${base} + x * ${stride} + d]) : 0.f;
    }`;
  const flush = uniformFlush(U);
  return `constexpr int NTHREADS = ${SIMT_THREADS};
constexpr int LDK = D | 1, LDV = DV | 1, LDS = BN + 1;  // odd row strides: lanes hit different banks

// dK, dV of one KV block (one CTA per batch, KV head, KV block): walks the Q blocks that visit this
// block in the forward's layout (its column view), for every query head of the group, recomputing
// P from q, k and lse. Accumulates in shared memory; each thread owns fixed elements, so the order
// of the sums never changes.
extern "C" __global__ void __launch_bounds__(NTHREADS) ${names.dkdv}(const TsrBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sK = reinterpret_cast<float*>(tsr_smem);  // [BN][LDK]
  float* sV = sK + BN * LDK;                        // [BN][LDV]
  float* sdK = sV + BN * LDV;                       // [BN][D]
  float* sdV = sdK + BN * D;                        // [BN][DV]
  float* sQ = sdV + BN * DV;                        // [BM][LDK]
  float* sdO = sQ + BM * LDK;                       // [BM][LDV]
  float* sP = sdO + BM * LDV;                       // [BM][LDS]
  float* sdS = sP + BM * LDS;                       // [BM][LDS]
  float* sL = sdS + BM * LDS;                       // [BM]
  float* sDl = sL + BM;                             // [BM]
  float* sRed = sP;                                 // [NTHREADS / 32], between blocks
  (void)sRed;
  int j, hk, b;
  tsr_bwd_cta<NKB, HKV, DKDV_DESC>(j, hk, b);
  const int tid = threadIdx.x;
  const int k0 = j * BN;
  const long long kbase = b * K_SB + hk * K_SH, vbase = b * V_SB + hk * V_SH;
  ${loadRows('sK', 'LDK', 'p.k', 'D', 'K_SS', 'kbase', 'k0', 'SKV', 'BN')}
  ${loadRows('sV', 'LDV', 'p.v', 'DV', 'V_SS', 'vbase', 'k0', 'SKV', 'BN')}
  for (int i = tid; i < BN * D; i += NTHREADS) sdK[i] = 0.f;
  for (int i = tid; i < BN * DV; i += NTHREADS) sdV[i] = 0.f;
  for (int hg = 0; hg < GROUP; ++hg) {
    const int h = hk * GROUP + hg;
    const int col = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * NKB + j;
    const int e0 = p.col_start[col], e1 = p.col_start[col + 1];
    const long long qbase = b * Q_SB + h * Q_SH, obase = b * O_SB + h * O_SH;
    const long long lbase = (long long)(b * HQ + h) * SQ;
${U > 0 ? '    float tacc[NUNIFORM];\n    #pragma unroll\n    for (int u = 0; u < NUNIFORM; ++u) tacc[u] = 0.f;\n' : ''}    for (int e = e0; e < e1; ++e) {
      const int qb = p.q_blocks[e], q0 = qb * BM;
      const bool full = p.col_full[e];
      (void)full;
      __syncthreads();  // the previous Q block is consumed
      ${loadRows('sQ', 'LDK', 'p.q', 'D', 'Q_SS', 'qbase', 'q0', 'SQ', 'BM')}
      ${loadRows('sdO', 'LDV', 'p.dout', 'DV', 'O_SS', 'obase', 'q0', 'SQ', 'BM')}
      for (int r = tid; r < BM; r += NTHREADS) {
        sL[r] = q0 + r < SQ ? p.lse2[lbase + q0 + r] : -TSR_NEG_INF;
        sDl[r] = q0 + r < SQ ? p.delta[lbase + q0 + r] : 0.f;
      }
      __syncthreads();
      for (int i = tid; i < BM * BN; i += NTHREADS) {
        const int r = i / BN, c = i % BN, q = q0 + r, kv = k0 + c;
        float dot = 0.f, dp = 0.f;
        #pragma unroll 4
        for (int d = 0; d < D; ++d) dot = fmaf(sQ[r * LDK + d], sK[c * LDK + d], dot);
        #pragma unroll 4
        for (int d = 0; d < DV; ++d) dp = fmaf(sdO[r * LDV + d], sV[c * LDV + d], dp);
${elementCode(spec, plan, true)}
        sP[r * LDS + c] = pr;
        sdS[r * LDS + c] = ds;
      }
      __syncthreads();
      for (int i = tid; i < BN * D; i += NTHREADS) {
        const int c = i / D, d = i % D;
        float a = sdK[i];
        for (int r = 0; r < BM; ++r) a = fmaf(sdS[r * LDS + c], sQ[r * LDK + d], a);
        sdK[i] = a;
      }
      for (int i = tid; i < BN * DV; i += NTHREADS) {
        const int c = i / DV, d = i % DV;
        float a = sdV[i];
        for (int r = 0; r < BM; ++r) a = fmaf(sP[r * LDS + c], sdO[r * LDV + d], a);
        sdV[i] = a;
      }
    }
${flush}  }
  __syncthreads();
  for (int i = tid; i < BN * D; i += NTHREADS) {
    const int c = i / D, d = i % D;
    if (k0 + c < SKV) p.dk[kbase + (k0 + c) * K_SS + d] = sdK[i];
  }
  for (int i = tid; i < BN * DV; i += NTHREADS) {
    const int c = i / DV, d = i % DV;
    if (k0 + c < SKV) p.dv[vbase + (k0 + c) * V_SS + d] = sdV[i];
  }
}

// dQ of one Q block (one CTA per batch, query head, Q block): walks the KV blocks of its row of the
// layout, recomputing P and dS; the second pass, so dq needs no atomics and is deterministic.
extern "C" __global__ void __launch_bounds__(NTHREADS) ${names.dq}(const TsrBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sK = reinterpret_cast<float*>(tsr_smem);  // [QBN][LDK]
  float* sV = sK + QBN * LDK;                        // [QBN][LDV]
  float* sdQ = sV + QBN * LDV;                       // [QBM][D]
  float* sQ = sdQ + QBM * D;                         // [QBM][LDK]
  float* sdO = sQ + QBM * LDK;                       // [QBM][LDV]
  float* sdS = sdO + QBM * LDV;                      // [QBM][LDS]
  float* sL = sdS + QBM * LDS;                       // [QBM]
  float* sDl = sL + QBM;                             // [QBM]
  int qb, h, b;
  tsr_bwd_cta<QNQB, HQ, DQ_DESC>(qb, h, b);
  const int hk = h / GROUP, tid = threadIdx.x;
  const int q0 = qb * QBM;
  const long long kbase = b * K_SB + hk * K_SH, vbase = b * V_SB + hk * V_SH;
  const long long qbase = b * Q_SB + h * Q_SH, obase = b * O_SB + h * O_SH;
  const long long lbase = (long long)(b * HQ + h) * SQ;
  ${loadRows('sQ', 'LDK', 'p.q', 'D', 'Q_SS', 'qbase', 'q0', 'SQ', 'QBM')}
  ${loadRows('sdO', 'LDV', 'p.dout', 'DV', 'O_SS', 'obase', 'q0', 'SQ', 'QBM')}
  for (int r = tid; r < QBM; r += NTHREADS) {
    sL[r] = q0 + r < SQ ? p.lse2[lbase + q0 + r] : -TSR_NEG_INF;
    sDl[r] = q0 + r < SQ ? p.delta[lbase + q0 + r] : 0.f;
  }
  for (int i = tid; i < QBM * D; i += NTHREADS) sdQ[i] = 0.f;
  const int row = ((p.layout_batches == 1 ? 0 : b) * p.layout_heads + (p.layout_heads == 1 ? 0 : h)) * QNQB + qb;
  const int e0 = p.row_start[row], e1 = p.row_start[row + 1];
  for (int e = e0; e < e1; ++e) {
    const int j = p.kv_blocks[e], k0 = j * QBN;
    const bool full = p.full[e];
    (void)full;
    __syncthreads();  // the previous KV block is consumed
    ${loadRows('sK', 'LDK', 'p.k', 'D', 'K_SS', 'kbase', 'k0', 'SKV', 'QBN')}
    ${loadRows('sV', 'LDV', 'p.v', 'DV', 'V_SS', 'vbase', 'k0', 'SKV', 'QBN')}
    __syncthreads();
    for (int i = tid; i < QBM * QBN; i += NTHREADS) {
        const int r = i / QBN, c = i % QBN, q = q0 + r, kv = k0 + c;
        float dot = 0.f, dp = 0.f;
        #pragma unroll 4
        for (int d = 0; d < D; ++d) dot = fmaf(sQ[r * LDK + d], sK[c * LDK + d], dot);
        #pragma unroll 4
        for (int d = 0; d < DV; ++d) dp = fmaf(sdO[r * LDV + d], sV[c * LDV + d], dp);
${elementCode(spec, plan, false)}
        (void)pr;
        sdS[r * LDS + c] = ds;
    }
    __syncthreads();
    for (int i = tid; i < QBM * D; i += NTHREADS) {
      const int r = i / D, d = i % D;
      float a = sdQ[i];
      #pragma unroll 4
      for (int c = 0; c < QBN; ++c) a = fmaf(sdS[r * LDS + c], sK[c * LDK + d], a);
      sdQ[i] = a;
    }
  }
  __syncthreads();
  for (int i = tid; i < QBM * D; i += NTHREADS) {
    const int r = i / D, d = i % D;
    if (q0 + r < SQ) p.dq[qbase + (q0 + r) * Q_SS + d] = sdQ[i];
  }
}`;
}

/** The per-head flush of the uniform terms' per-thread sums: one partial per CTA and (b, h). */
function uniformFlush(U: number): string {
  return U > 0
    ? `    // uniform tensor terms: this CTA's partial per (b, h), summed in a fixed order
    #pragma unroll
    for (int u = 0; u < NUNIFORM; ++u) {
      float s = tacc[u];
      #pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      __syncthreads();
      if ((tid & 31) == 0) sRed[tid >> 5] = s;
      __syncthreads();
      if (tid == 0) {
        float t = 0.f;
        for (int w = 0; w < NTHREADS / 32; ++w) t += sRed[w];
        p.tpart[((long long)(u * BATCH + b) * HQ + h) * NKB + j] = t;
      }
    }
`
    : '';
}

/** The captured-tensor term code both paths' element code uses. */
function termCode(plan: BackwardPlan): TermCode {
  const ng = plan.terms.length;
  const U = plan.terms.filter((t) => t.reduce === 'uniform').length;
  const acc: string[] = [];
  let u = 0;
  plan.terms.forEach((t, i) => {
    if (t.reduce === 'uniform') {
      acc.push(`tacc[${u}] = fmaf(dsp, w[${i}], tacc[${u}]);`);
      u++;
    } else {
      const [off, len] = plan.fixed.get(t.slot) ?? [0, 0];
      acc.push(
        `{ const float c = dsp * w[${i}]; if (c != 0.f && (unsigned)ix[${i}] < ${len}u) atomicAdd(p.tfix + ${off} + ix[${i}], (unsigned long long)__float2ll_rn(c * FIX_SCALE)); }`,
      );
    }
  });
  return {
    decl: ng > 0 ? 'float w[NTERMS]; int ix[NTERMS];' : '',
    args: ng > 0 ? ', w, ix' : '',
    accumulate: acc.join(' '),
    init:
      U > 0
        ? '    float tacc[NUNIFORM];\n    #pragma unroll\n    for (int u = 0; u < NUNIFORM; ++u) tacc[u] = 0.f;\n'
        : '',
    flush: uniformFlush(U),
  };
}

/** Shared bytes of the SIMT kernels: [dkdv, dq]. */
function simtShared(spec: AttentionSpec, plan: BackwardPlan): [number, number] {
  const D = spec.headDim;
  const DV = spec.headDimV;
  const ldk = D | 1;
  const ldv = DV | 1;
  const lds = plan.blockKV + 1;
  const { blockQ: BM, blockKV: BN } = plan;
  const dkdv =
    4 * (BN * ldk + BN * ldv + BN * D + BN * DV + BM * ldk + BM * ldv + 2 * BM * lds + 2 * BM);
  const dq = 4 * (BN * ldk + BN * ldv + BM * D + BM * ldk + BM * ldv + BM * lds + 2 * BM);
  return [dkdv, dq];
}

/** The tensor-gradient reduction: fixed-point sums to f32, uniform partials summed in fixed order. */
function gradsKernel(
  spec: AttentionSpec,
  plan: BackwardPlan,
  name: string,
  gradSlots: readonly number[],
  fixed: ReadonlyMap<number, readonly [number, number]>,
  partialTerms: number,
): string {
  const lines: string[] = [];
  for (const s of gradSlots) {
    const len = spec.tensors[s]?.length ?? 0;
    const f = fixed.get(s);
    lines.push(
      f
        ? `  for (int i = tid; i < ${len}; i += 256) p.g${s}[i] = (float)((double)(long long)p.tfix[${f[0]} + i] * FIX_INV);`
        : `  for (int i = tid; i < ${len}; i += 256) p.g${s}[i] = 0.f;`,
    );
  }
  const uniform = plan.terms.map((t, i) => ({ t, i })).filter(({ t }) => t.reduce === 'uniform');
  const adds = uniform.map(
    ({ t, i }, u) => `    for (int b = 0; b < BATCH; ++b)
      for (int h = 0; h < HQ; ++h) {
        const int x = tsr_term_index_${i}(b, h, p);
        if ((unsigned)x < ${spec.tensors[t.slot]?.length ?? 0}u) p.g${t.slot}[x] += p.tpart[SUMS + (${u} * BATCH + b) * HQ + h];
      }`,
  );
  return `// Captured-tensor gradients, deterministically: scattered terms from their 64-bit fixed-point sums
// (integer atomics: the same total in any order), then each uniform term's per-CTA partials summed
// per (b, h) by one warp in a fixed order, added to the tensor by one thread in (b, h) order.
extern "C" __global__ void __launch_bounds__(256) ${name}(const TsrBwdParams p) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  (void)warp; (void)lane;
${lines.join('\n')}
${
  partialTerms > 0
    ? `  constexpr long long SUMS = (long long)${partialTerms} * BATCH * HQ * NKB;
  for (int it = warp; it < ${partialTerms} * BATCH * HQ; it += 8) {
    const float* src = p.tpart + (long long)it * NKB;
    float s = 0.f;
    for (int j = lane; j < NKB; j += 32) s += src[j];
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) p.tpart[SUMS + it] = s;
  }
  __syncthreads();
  if (tid == 0) {
${adds.join('\n')}
  }`
    : ''
}
}`;
}

interface KernelNames {
  readonly pre: string;
  readonly dkdv: string;
  readonly dq: string;
  readonly grads: string;
}

/** Lowers a softmax spec's backward pass, as planned, to one CUDA C++ module. */
export function emitBackward(spec: AttentionSpec, plan: BackwardPlan): BackwardModule {
  const id = spec.hash.slice(0, 12);
  const names: KernelNames = {
    pre: `tsr_bwd_pre_${id}`,
    dkdv: `tsr_bwd_dkdv_${id}`,
    dq: `tsr_bwd_dq_${id}`,
    grads: `tsr_bwd_grads_${id}`,
  };
  const { gradSlots, fixed } = plan;
  const params = backwardParams(spec, gradSlots);
  const U = plan.terms.filter((t) => t.reduce === 'uniform').length;
  const body =
    plan.path === 'mma'
      ? emitMmaBackward(spec, plan, names, termCode(plan))
      : {
          source: simtKernels(spec, plan, names),
          shared: simtShared(spec, plan),
          threads: SIMT_THREADS,
        };
  const hasGrads = gradSlots.length > 0;
  const source = `${modulePrelude(spec)}
// backward pass (${plan.path}): tiles ${plan.blockQ} query rows × ${plan.blockKV} keys

${backwardConstants(spec, plan)}

${paramStruct('TsrBwdParams', params)}

${backwardScoreFunctions(spec, plan)}

${preKernel(names.pre)}

${body.source}
${hasGrads ? `\n${gradsKernel(spec, plan, names.grads, gradSlots, fixed, U)}\n` : ''}`;
  const entry = (name: string, threads: number, shared: number): KernelEntry => ({
    name,
    threads,
    dynamicSharedBytes: shared,
    params,
  });
  const pre = entry(names.pre, PRE_ROWS_PER_CTA * 32, 0);
  const dkdv = entry(names.dkdv, body.threads, body.shared[0]);
  const dq = entry(names.dq, body.threads, body.shared[1]);
  const grads = hasGrads ? entry(names.grads, 256, 0) : null;
  return {
    source,
    pre,
    dkdv,
    dq,
    grads,
    kernels: grads ? [pre, dkdv, dq, grads] : [pre, dkdv, dq],
    generatorVersion: GENERATOR_VERSION,
  };
}
