import { type AttentionSpec, UnsupportedError } from '@tessera/core';
import { featureDim, isCausalExpr, linearInputScales } from '@tessera/core/backend';
import { floatLiteral } from '../expr-cuda.js';
import {
  type CudaModuleSource,
  GENERATOR_VERSION,
  type KernelEntry,
  modulePrelude,
  type ParamField,
  paramStruct,
  shapeConstants,
  storageType,
} from './common.js';

/** Keys (and queries) per chunk of the scan: the chunk's features must fit in shared memory. */
export function linearChunk(F: number): number {
  if (F <= 128) return 64;
  if (F <= 256) return 32;
  if (F <= 512) return 16;
  throw new UnsupportedError(`cuda: linear attention supports up to 512 features (got ${F})`);
}

const SCAN_THREADS = 256;
const COLS = 32;

/**
 * The device lambda that adds a loaded chunk of keys to the running state: S += Σ_r φ(k_r)·w_r ⊗ v_r
 * and z += Σ_r φ(k_r)·w_r. The forward and the backward's recomputation emit the same text.
 */
export const FOLD_KEYS = `  auto fold_keys = [&]() {
    for (int i = tid; i < F * COLS; i += NTHREADS) {
      const int f = i / COLS, c = i % COLS;
      float acc = sS[i];
      for (int r = 0; r < C; ++r) acc = fmaf(sPk[r * LDF + f] * sWk[r], sV[r * COLS + c], acc);
      sS[i] = acc;
    }
    for (int f = tid; f < F; f += NTHREADS) {
      float acc = sz[f];
      for (int r = 0; r < C; ++r) acc = fmaf(sPk[r * LDF + f], sWk[r], acc);
      sz[f] = acc;
    }
    __syncthreads();
  };
`;

export function linearScanSharedBytes(spec: AttentionSpec): number {
  const F = featureDim(spec);
  const C = linearChunk(F);
  const ldf = F + 1;
  return 4 * (F * COLS + F + 2 * C * ldf + C * C + C * COLS + 3 * C + 1);
}

/**
 * Linear attention (core's features.ts defines the maths): `tsr_features` turns each query or key
 * row into its stabilised feature vector φ̂ and stabiliser; `tsr_linear_scan` runs per (batch,
 * head, 32 output columns) over chunks of keys, keeping the state S = Σ φ̃(k)vᵀ and z = Σ φ̃(k) in
 * shared memory, rescaled whenever the key stabiliser's running maximum grows. Causal specs add
 * each chunk's own lower-triangular part before folding the chunk into the state.
 */
export function emitLinear(spec: AttentionSpec): CudaModuleSource {
  if (spec.kernel.type !== 'linear') throw new Error('emitLinear needs a linear kernel');
  const causal = spec.mask !== null;
  if (spec.mask && !isCausalExpr(spec.mask.expr)) {
    throw new UnsupportedError(
      `cuda: linear kernels take no mask or a causal mask (got '${spec.mask.name}')`,
    );
  }
  const { featureMap, features: M } = spec.kernel;
  const F = featureDim(spec);
  const C = linearChunk(F);
  const D = spec.headDim;
  const elem = storageType(spec.dtype);
  const tag = spec.hash.slice(0, 12);
  const featName = `tsr_features_${tag}`;
  const scanName = `tsr_linear_${tag}`;

  const featParams: ParamField[] = [
    { name: 'src', type: 'ptr', ctype: `const ${elem}* __restrict__` },
    { name: 'phi', type: 'ptr', ctype: 'float* __restrict__' },
    { name: 'stab', type: 'ptr', ctype: 'float* __restrict__' },
    { name: 'w', type: 'ptr', ctype: 'const float* __restrict__' },
    { name: 's_b', type: 'i64', ctype: 'long long' },
    { name: 's_h', type: 'i64', ctype: 'long long' },
    { name: 's_r', type: 'i64', ctype: 'long long' },
    { name: 'heads', type: 'i32', ctype: 'int' },
    { name: 'seq', type: 'i32', ctype: 'int' },
    { name: 'scale', type: 'f32', ctype: 'float' },
  ];
  const scanParams: ParamField[] = [
    { name: 'phi_q', type: 'ptr', ctype: 'const float* __restrict__' },
    { name: 'stab_q', type: 'ptr', ctype: 'const float* __restrict__' },
    { name: 'phi_k', type: 'ptr', ctype: 'const float* __restrict__' },
    { name: 'stab_k', type: 'ptr', ctype: 'const float* __restrict__' },
    { name: 'v', type: 'ptr', ctype: `const ${elem}* __restrict__` },
    { name: 'out', type: 'ptr', ctype: `${elem}* __restrict__` },
    { name: 'lse', type: 'ptr', ctype: 'float* __restrict__' },
  ];

  const invSqrtM = floatLiteral(1 / Math.sqrt(M));
  let featureBody: string;
  switch (featureMap) {
    case 'elu+1':
      featureBody = `for (int c = lane; c < D; c += 32) { const float x = xs[c]; out[c] = x > 0.f ? x + 1.f : expf(x); }
    if (lane == 0) p.stab[row] = 0.f;`;
      break;
    case 'relu':
      featureBody = `for (int c = lane; c < D; c += 32) out[c] = fmaxf(xs[c], 0.f);
    if (lane == 0) p.stab[row] = 0.f;`;
      break;
    case 'favor+':
      featureBody = `float mx = TSR_NEG_INF;
    for (int r = lane; r < M; r += 32) { const float pr = tsr_project(p.w + (long long)r * D, xs); out[r] = pr; mx = fmaxf(mx, pr); }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    for (int r = lane; r < M; r += 32) out[r] = expf(out[r] - mx) * ${invSqrtM};
    if (lane == 0) p.stab[row] = mx - 0.5f * sq;`;
      break;
    case 'trig-rf':
      featureBody = `for (int r = lane; r < M; r += 32) {
      const float pr = tsr_project(p.w + (long long)r * D, xs);
      out[r] = sinf(pr) * ${invSqrtM};
      out[M + r] = cosf(pr) * ${invSqrtM};
    }
    if (lane == 0) p.stab[row] = 0.5f * sq;`;
      break;
  }

  const source = `${modulePrelude(spec)}

${shapeConstants(spec)}
constexpr int M = ${M}, F = ${F};      // random features (or D), feature dimension
constexpr int C = ${C}, COLS = ${COLS}, LDF = F + 1, NTHREADS = ${SCAN_THREADS};
constexpr int NCHUNK = ${Math.ceil(Math.max(spec.seqQ, spec.seqKV) / C)};
constexpr bool CAUSAL = ${causal};

${paramStruct('TsrFeatureParams', featParams)}
${paramStruct('TsrScanParams', scanParams)}

__device__ __forceinline__ float tsr_project(const float* __restrict__ w, const float* xs) {
  float acc = 0.f;
  for (int d = 0; d < D; ++d) acc = fmaf(w[d], xs[d], acc);
  return acc;
}

// One warp per row: x = scale * row (query or key), then φ̂(x) (F floats) and its stabiliser.
extern "C" __global__ void __launch_bounds__(128) ${featName}(const TsrFeatureParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * 4 + warp;
  const long long rows = (long long)BATCH * p.heads * p.seq;
  if (row >= rows) return;
  float* xs = reinterpret_cast<float*>(tsr_smem) + warp * D;
  const int s = (int)(row % p.seq);
  const int hh = (int)((row / p.seq) % p.heads);
  const int b = (int)(row / ((long long)p.seq * p.heads));
  const tsr_elem* src = p.src + b * p.s_b + hh * p.s_h + s * p.s_r;
  float sq = 0.f;
  for (int c = lane; c < D; c += 32) { const float x = p.scale * tsr_to_f32(src[c]); xs[c] = x; sq += x * x; }
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  (void)sq;
  __syncwarp();
  float* out = p.phi + row * F;
  ${featureBody}
}

extern "C" __global__ void __launch_bounds__(NTHREADS) ${scanName}(const TsrScanParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sS = reinterpret_cast<float*>(tsr_smem);  // [F][COLS] state Σ φ̃(k) v
  float* sz = sS + F * COLS;                        // [F]        Σ φ̃(k)
  float* sPk = sz + F;                              // [C][LDF]   key features of the chunk
  float* sPq = sPk + C * LDF;                       // [C][LDF]   query features of the chunk
  float* sA = sPq + C * LDF;                        // [C][C]     φ̃(q_i)·φ̃(k_j), j <= i
  float* sV = sA + C * C;                           // [C][COLS]
  float* sWk = sV + C * COLS;                       // [C] key weights exp(stab_k - c_k)
  float* sDen = sWk + C;                            // [C]
  float* sCq = sDen + C;                            // [C]
  float* sCk = sCq + C;                             // [1] running key stabiliser maximum

  const int col0 = blockIdx.x * COLS;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / GROUP;
  const int tid = threadIdx.x;
  const float* phiK = p.phi_k + ((long long)b * HKV + hk) * SKV * F;
  const float* stabK = p.stab_k + ((long long)b * HKV + hk) * SKV;
  const float* phiQ = p.phi_q + ((long long)b * HQ + h) * SQ * F;
  const float* stabQ = p.stab_q + ((long long)b * HQ + h) * SQ;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  tsr_elem* op = p.out + b * O_SB + h * O_SH;
  float* lp = p.lse + ((long long)b * HQ + h) * SQ;

  for (int i = tid; i < F * COLS; i += NTHREADS) sS[i] = 0.f;
  for (int i = tid; i < F; i += NTHREADS) sz[i] = 0.f;
  if (tid == 0) sCk[0] = TSR_NEG_INF;
  __syncthreads();

  // Folds key chunk [k0, k0 + C) into the state, after rescaling it to the new stabiliser maximum.
  auto load_keys = [&](int k0) {
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPk[r * LDF + f] = k0 + r < SKV ? phiK[(long long)(k0 + r) * F + f] : 0.f;
    }
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      sV[i] = k0 + r < SKV && col0 + c < DV ? tsr_to_f32(vp[(k0 + r) * V_SS + col0 + c]) : 0.f;
    }
    if (tid < 32) {
      float mx = TSR_NEG_INF;
      for (int r = tid; r < C; r += 32) if (k0 + r < SKV) mx = fmaxf(mx, stabK[k0 + r]);
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float old = sCk[0];
      const float cn = fmaxf(old, mx);
      const float rescale = old == TSR_NEG_INF ? 0.f : expf(old - cn);
      for (int r = tid; r < C; r += 32) sWk[r] = k0 + r < SKV ? expf(stabK[k0 + r] - cn) : 0.f;
      __syncwarp();
      if (tid == 0) { sCk[0] = cn; sDen[0] = rescale; }
    }
    __syncthreads();
    const float rescale = sDen[0];
    for (int i = tid; i < F * COLS; i += NTHREADS) sS[i] *= rescale;
    for (int i = tid; i < F; i += NTHREADS) sz[i] *= rescale;
    __syncthreads();
  };
${FOLD_KEYS}  auto load_queries = [&](int q0) {
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPq[r * LDF + f] = q0 + r < SQ ? phiQ[(long long)(q0 + r) * F + f] : 0.f;
    }
    for (int r = tid; r < C; r += NTHREADS) sCq[r] = q0 + r < SQ ? stabQ[q0 + r] : 0.f;
    __syncthreads();
  };
  // Rows [q0, q0 + C): state part plus (causal) the chunk's own keys j <= i, then out and lse.
  auto emit_rows = [&](int q0, bool own) {
    if (own) {
      for (int i = tid; i < C * C; i += NTHREADS) {
        const int qi = i / C, kj = i % C;
        float a = 0.f;
        if (kj <= qi) {
          for (int f = 0; f < F; ++f) a = fmaf(sPq[qi * LDF + f], sPk[kj * LDF + f], a);
          a *= sWk[kj];
        }
        sA[i] = a;
      }
      __syncthreads();  // sA is read across rows below
    }
    for (int r = tid; r < C; r += NTHREADS) {
      float den = 0.f;
      for (int f = 0; f < F; ++f) den = fmaf(sPq[r * LDF + f], sz[f], den);
      if (own) for (int j = 0; j <= r; ++j) den += sA[r * C + j];
      sDen[r] = den;
    }
    __syncthreads();
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      if (q0 + r >= SQ || col0 + c >= DV) continue;
      float num = 0.f;
      for (int f = 0; f < F; ++f) num = fmaf(sPq[r * LDF + f], sS[f * COLS + c], num);
      if (own) for (int j = 0; j <= r; ++j) num = fmaf(sA[r * C + j], sV[j * COLS + c], num);
      const float den = sDen[r];
      op[(q0 + r) * O_SS + col0 + c] = tsr_from_f32(den > 0.f ? num / den : 0.f);
    }
    if (blockIdx.x == 0) {
      for (int r = tid; r < C; r += NTHREADS) {
        if (q0 + r >= SQ) continue;
        const float den = sDen[r];
        lp[q0 + r] = den > 0.f ? logf(den) + sCq[r] + sCk[0] : TSR_NEG_INF;
      }
    }
    __syncthreads();
  };

  if (CAUSAL) {
    for (int ch = 0; ch < NCHUNK; ++ch) {
      const int c0 = ch * C;
      load_keys(c0);
      load_queries(c0);
      emit_rows(c0, true);
      fold_keys();
    }
  } else {
    for (int k0 = 0; k0 < SKV; k0 += C) {
      load_keys(k0);
      fold_keys();
    }
    for (int q0 = 0; q0 < SQ; q0 += C) {
      load_queries(q0);
      emit_rows(q0, false);
    }
  }
}
`;
  const featEntry: KernelEntry = {
    name: featName,
    threads: 128,
    dynamicSharedBytes: 4 * 4 * D,
    params: featParams,
  };
  const scanEntry: KernelEntry = {
    name: scanName,
    threads: SCAN_THREADS,
    dynamicSharedBytes: linearScanSharedBytes(spec),
    params: scanParams,
  };
  return {
    source,
    path: 'linear',
    blockQ: C,
    blockKV: C,
    kernels: [featEntry, scanEntry],
    schedule: 'grid',
    generatorVersion: GENERATOR_VERSION,
  };
}

/** The query and key input scales a linear module's feature kernel is launched with. */
export const linearScales = (spec: AttentionSpec) => linearInputScales(spec.scale);
