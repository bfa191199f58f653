import { type AttentionSpec, UnsupportedError } from '@tessera/core';
import { featureDim, isCausalExpr, linearInputScales } from '@tessera/core/backend';
import {
  GENERATOR_VERSION,
  type KernelEntry,
  modulePrelude,
  type ParamField,
  paramStruct,
  shapeConstants,
  storageType,
} from '../emit/common.js';
import { FOLD_KEYS } from '../emit/linear.js';
import { floatLiteral } from '../expr-cuda.js';

/*
 * The backward pass of linear attention (the forward and its notation: core's features.ts; the
 * maths: @tessera/cpu's backward/linear.ts). With ψ_j the key features rescaled to a common key
 * stabiliser C, den_i = φ̃_i · Σ_j ψ_j and ρ_i = 1 / den_i:
 *
 *   u_i = Σ_j ψ_j (v_j · dOut_i),  D_i = ρ_i φ̃_i · u_i,  g_i = ρ_i (u_i − D_i z_i)  → dq_i
 *   dv_j = ψ_j · Σ_i ρ_i φ̃_i dOut_iᵀ,  h_j = Σ_i ρ_i (dOut_i · v_j − D_i) φ̃_i      → dk_j
 *
 * over the keys each row sees (all; causal: j ≤ i), and dq_i, dk_j are the feature maps' vector-
 * Jacobian products of g_i, h_j (the random matrix is a constant; dLse is taken as 0). D_i is
 * that of the recomputed forward, so neither `out` nor `lse` is read. Causal specs go by chunks
 * of C rows and keys, as the forward does: C for chunk c is the running maximum of the key
 * stabilisers up to the chunk's end (`cmax`), rows of chunk c are normalised with it, and the
 * dk/dv pass, walking the chunks backwards, rescales its suffix sums by exp(C_c − C_{c+1}) ≤ 1.
 * Kernels, in launch order:
 *   1. feat_q, feat_k: one warp per row, φ̃ (and the key stabiliser) of q and k
 *   2. cmax: per (batch, KV head) the key stabiliser maximum of each chunk (running if causal)
 *   3. dq_part: per (batch, query head, 32 columns of dOut) the prefix state S = Σ ψ vᵀ, z = Σ ψ;
 *      each row's partial u over those columns and (column block 0) its z_i
 *   4. dq: one warp per row sums the partials, den, D, g, and the feature map's VJP into dq;
 *      keeps ρ_i and D_i for the next pass
 *   5. dkdv: per (batch, KV head, 32 columns) the suffix state R = Σ ρ φ̃ dOutᵀ and r = Σ ρ D φ̃
 *      over the group's query heads; dv complete, h partial over the columns
 *   6. dk: one warp per key sums the partials of h and applies the VJP
 * No atomics: every sum has a fixed order, so the result is the same run to run.
 */

const COLS = 32;
const THREADS = 256;

/** The schedule of a linear spec's backward pass, decided once. */
export interface LinearBackwardPlan {
  readonly path: 'linear';
  /** Feature dimension F. */
  readonly features: number;
  /** Rows and keys per chunk. */
  readonly chunk: number;
  /** Chunks over max(seqQ, seqKV). */
  readonly chunks: number;
  /** 32-column blocks of headDimV (the grid's x of the two scan passes). */
  readonly colBlocks: number;
  readonly causal: boolean;
  /** favor+ and trig-rf read the random feature matrix. */
  readonly random: boolean;
  /** Floats of each scratch buffer. */
  readonly scratch: Readonly<Record<LinearScratch, number>>;
  /** Launch grids, in launch order (see the comment atop backward/linear.ts). */
  readonly grids: Readonly<
    Record<'featQ' | 'featK' | 'cmax' | 'dqPart' | 'dq' | 'dkdv' | 'dk', [number, number, number]>
  >;
}

export type LinearScratch =
  | 'phiQ'
  | 'phiK'
  | 'stabK'
  | 'cmax'
  | 'upart'
  | 'zrow'
  | 'rden'
  | 'delta'
  | 'gkpart';

/** Rows per chunk: the dk/dv pass holds a few C × F tiles in shared memory. */
export function linearBackwardChunk(F: number): number {
  if (F <= 64) return 64;
  if (F <= 128) return 32;
  if (F <= 256) return 16;
  if (F <= 512) return 8;
  throw new UnsupportedError(
    `cuda: the backward pass of linear kernels supports up to 512 features (got ${F})`,
  );
}

/** Plans a linear spec's backward; throws UnsupportedError naming what it cannot take. */
export function planLinearBackward(spec: AttentionSpec): LinearBackwardPlan {
  const k = spec.kernel;
  if (k.type !== 'linear') throw new Error('planLinearBackward needs a linear kernel');
  if (spec.mask && !isCausalExpr(spec.mask.expr))
    throw new UnsupportedError(
      `cuda: linear kernels take no mask or a causal mask (got '${spec.mask.name}')`,
    );
  if (spec.batch > 65535 || spec.headsQ > 65535)
    throw new UnsupportedError(
      `cuda: batch and headsQ must be at most 65535 (got ${spec.batch}, ${spec.headsQ})`,
    );
  const F = featureDim(spec);
  const C = linearBackwardChunk(F);
  const { batch: B, headsQ: H, headsKV: HK, seqQ: SQ, seqKV: SK } = spec;
  const chunks = Math.ceil(Math.max(SQ, SK) / C);
  const colBlocks = Math.ceil(spec.headDimV / COLS);
  const warps = (rows: number): [number, number, number] => [Math.ceil(rows / 4), 1, 1];
  return {
    path: 'linear',
    features: F,
    chunk: C,
    chunks,
    colBlocks,
    causal: spec.mask !== null,
    random: k.featureMap === 'favor+' || k.featureMap === 'trig-rf',
    scratch: {
      phiQ: B * H * SQ * F,
      phiK: B * HK * SK * F,
      stabK: B * HK * SK,
      cmax: B * HK * chunks,
      upart: B * H * SQ * colBlocks * F,
      zrow: B * H * SQ * F,
      rden: B * H * SQ,
      delta: B * H * SQ,
      gkpart: B * HK * SK * colBlocks * F,
    },
    grids: {
      featQ: warps(B * H * SQ),
      featK: warps(B * HK * SK),
      cmax: [HK, B, 1],
      dqPart: [colBlocks, H, B],
      dq: warps(B * H * SQ),
      dkdv: [colBlocks, HK, B],
      dk: warps(B * HK * SK),
    },
  };
}

/** The generated module of a linear backward pass: source and its kernels in launch order. */
export interface LinearBackwardModule {
  readonly source: string;
  readonly path: 'linear';
  readonly featQ: KernelEntry;
  readonly featK: KernelEntry;
  readonly cmax: KernelEntry;
  readonly dqPart: KernelEntry;
  readonly dq: KernelEntry;
  readonly dkdv: KernelEntry;
  readonly dk: KernelEntry;
  /** All of the above, in launch order (what the module loader takes). */
  readonly kernels: readonly KernelEntry[];
  readonly generatorVersion: number;
}

/** Shared memory floats of the two scan passes. */
function scanFloats(F: number, C: number) {
  const LDF = F + 1;
  return {
    dqPart: F * COLS + F + 2 * C * LDF + 2 * C * COLS + C * C + C,
    dkdv: F * COLS + F + 3 * C * LDF + 3 * C * COLS + 2 * C * C + 3 * C,
  };
}

export function emitLinearBackward(
  spec: AttentionSpec,
  plan: LinearBackwardPlan,
): LinearBackwardModule {
  if (spec.kernel.type !== 'linear') throw new Error('emitLinearBackward needs a linear kernel');
  const { featureMap, features: M } = spec.kernel;
  const { features: F, chunk: C, chunks, colBlocks, causal } = plan;
  const D = spec.headDim;
  const elem = storageType(spec.dtype);
  const scales = linearInputScales(spec.scale);
  const tag = spec.hash.slice(0, 12);
  const name = (k: string) => `tsr_lbwd_${k}_${tag}`;
  const ptr = (n: string, ctype: string): ParamField => ({ name: n, type: 'ptr', ctype });
  const params: ParamField[] = [
    ...['q', 'k', 'v', 'dout'].map((n) => ptr(n, `const ${elem}* __restrict__`)),
    ptr('w', 'const float* __restrict__'),
    ...['phi_q', 'phi_k', 'stab_k', 'cmax', 'upart', 'zrow', 'rden', 'delta', 'gkpart'].map((n) =>
      ptr(n, 'float* __restrict__'),
    ),
    ...['dq', 'dk', 'dv'].map((n) => ptr(n, 'float* __restrict__')),
  ];
  const invSqrtM = floatLiteral(1 / Math.sqrt(M));
  const random = featureMap === 'favor+' || featureMap === 'trig-rf';

  // φ̃(x) of one row into out[F] (x already in xs, |x|² in sq); the stabiliser into *stab.
  let features: string;
  switch (featureMap) {
    case 'elu+1':
      features = `for (int c = lane; c < D; c += 32) { const float x = xs[c]; out[c] = x > 0.f ? x + 1.f : expf(x); }
  if (lane == 0 && stab) *stab = 0.f;`;
      break;
    case 'relu':
      features = `for (int c = lane; c < D; c += 32) out[c] = fmaxf(xs[c], 0.f);
  if (lane == 0 && stab) *stab = 0.f;`;
      break;
    case 'favor+':
      features = `float mx = TSR_NEG_INF;
  for (int r = lane; r < M; r += 32) { const float pr = tsr_project(p.w + (long long)r * D, xs); out[r] = pr; mx = fmaxf(mx, pr); }
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  for (int r = lane; r < M; r += 32) out[r] = expf(out[r] - mx) * ${invSqrtM};
  if (lane == 0 && stab) *stab = mx - 0.5f * sq;`;
      break;
    case 'trig-rf':
      features = `for (int r = lane; r < M; r += 32) {
    const float pr = tsr_project(p.w + (long long)r * D, xs);
    out[r] = sinf(pr) * ${invSqrtM};
    out[M + r] = cosf(pr) * ${invSqrtM};
  }
  if (lane == 0 && stab) *stab = 0.5f * sq;`;
      break;
  }

  // dst[d] = mul · (J_φ(x)ᵀ g)_d on the stabilised features ph (x in xs): the feature map's VJP.
  let vjp: string;
  if (!random) {
    const below = featureMap === 'elu+1' ? 'ph[d]' : '0.f';
    vjp = `(void)bb; (void)p;
  for (int d = lane; d < D; d += 32) dst[d] = mul * g[d] * (xs[d] > 0.f ? 1.f : ${below});`;
  } else {
    // Both maps give α x + Σ_r β_r w_r (favor+: ∂φ_r/∂x = φ_r (w_r − x); trig-rf:
    // ∂φ_r/∂x = x φ_r + φ_{M+r} w_r, ∂φ_{M+r}/∂x = x φ_{M+r} − φ_r w_r).
    const beta =
      featureMap === 'favor+'
        ? 'const float bt = g[r] * ph[r]; bb[r] = bt; alpha -= bt;'
        : 'bb[r] = g[r] * ph[M + r] - g[M + r] * ph[r]; alpha += g[r] * ph[r] + g[M + r] * ph[M + r];';
    vjp = `float alpha = 0.f;
  for (int r = lane; r < M; r += 32) { ${beta} }
  for (int o = 16; o > 0; o >>= 1) alpha += __shfl_xor_sync(0xffffffffu, alpha, o);
  __syncwarp();
  for (int d = lane; d < D; d += 32) {
    float s = alpha * xs[d];
    for (int r = 0; r < M; ++r) s = fmaf(bb[r], p.w[(long long)r * D + d], s);
    dst[d] = mul * s;
  }`;
  }

  const fl = scanFloats(F, C);
  // Per warp of the one-warp-per-row kernels: x (D), g (F), φ̃ (F), β (M).
  const warpFloats = D + 2 * F + M;
  const source = `${modulePrelude(spec)}
// linear backward: feature map ${featureMap}, ${causal ? 'causal, by chunks' : 'non-causal'}

${shapeConstants(spec)}
constexpr int M = ${M}, F = ${F};      // random features (or D), feature dimension
constexpr int C = ${C}, COLS = ${COLS}, LDF = F + 1, NTHREADS = ${THREADS};
constexpr int NCHUNK = ${chunks}, NCOL = ${colBlocks}, WARP_FLOATS = ${warpFloats};
constexpr bool CAUSAL = ${causal};
constexpr float QSCALE = ${floatLiteral(scales.query)}, KSCALE = ${floatLiteral(scales.key)};

${paramStruct('TsrLinBwdParams', params)}

__device__ __forceinline__ float tsr_project(const float* __restrict__ w, const float* xs) {
  float acc = 0.f;
  for (int d = 0; d < D; ++d) acc = fmaf(w[d], xs[d], acc);
  return acc;
}

// One warp: x = scale · row into xs, then φ̃(x) into out and its stabiliser into *stab (if any).
__device__ __forceinline__ void tsr_feature_row(const TsrLinBwdParams& p, const tsr_elem* src, float scale, float* xs, float* out, float* stab, int lane) {
  float sq = 0.f;
  for (int c = lane; c < D; c += 32) { const float x = scale * tsr_to_f32(src[c]); xs[c] = x; sq += x * x; }
  for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
  (void)sq; (void)p;
  __syncwarp();
  ${features}
}

// One warp: dst[d] = mul · (J_φ(x)ᵀ g)_d, x in xs, φ̃(x) in ph, bb scratch (M floats).
__device__ __forceinline__ void tsr_vjp(const TsrLinBwdParams& p, const float* xs, const float* ph, const float* g, float* bb, float mul, float* dst, int lane) {
  ${vjp}
}

extern "C" __global__ void __launch_bounds__(128) ${name('feat_q')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * 4 + warp;
  if (row >= (long long)BATCH * HQ * SQ) return;
  const int s = (int)(row % SQ), h = (int)((row / SQ) % HQ), b = (int)(row / ((long long)SQ * HQ));
  float* xs = reinterpret_cast<float*>(tsr_smem) + warp * D;
  tsr_feature_row(p, p.q + b * Q_SB + h * Q_SH + s * Q_SS, QSCALE, xs, p.phi_q + row * F, nullptr, lane);
}

extern "C" __global__ void __launch_bounds__(128) ${name('feat_k')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * 4 + warp;
  if (row >= (long long)BATCH * HKV * SKV) return;
  const int s = (int)(row % SKV), h = (int)((row / SKV) % HKV), b = (int)(row / ((long long)SKV * HKV));
  float* xs = reinterpret_cast<float*>(tsr_smem) + warp * D;
  tsr_feature_row(p, p.k + b * K_SB + h * K_SH + s * K_SS, KSCALE, xs, p.phi_k + row * F, p.stab_k + row, lane);
}

// One warp per (batch, KV head): the key stabiliser maximum per chunk (running if causal).
extern "C" __global__ void __launch_bounds__(32) ${name('cmax')}(const TsrLinBwdParams p) {
  const int hk = blockIdx.x, b = blockIdx.y, lane = threadIdx.x;
  const float* st = p.stab_k + ((long long)b * HKV + hk) * SKV;
  float* cm = p.cmax + ((long long)b * HKV + hk) * NCHUNK;
  float run = TSR_NEG_INF;
  for (int ch = 0; ch < NCHUNK; ++ch) {
    float mx = TSR_NEG_INF;
    for (int r = lane; r < C; r += 32) if (ch * C + r < SKV) mx = fmaxf(mx, st[ch * C + r]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    run = fmaxf(run, mx);
    if (CAUSAL && lane == 0) cm[ch] = run;
  }
  if (!CAUSAL) for (int ch = lane; ch < NCHUNK; ch += 32) cm[ch] = run;
}

// Per (batch, query head, COLS columns): prefix state over keys; partial u_i and z_i per row.
extern "C" __global__ void __launch_bounds__(NTHREADS) ${name('dq_part')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sS = reinterpret_cast<float*>(tsr_smem);  // [F][COLS] Σ ψ_j v_j (this CTA's columns)
  float* sz = sS + F * COLS;                        // [F]        Σ ψ_j
  float* sPk = sz + F;                              // [C][LDF]   key features of the chunk
  float* sPq = sPk + C * LDF;                       // [C][LDF]   query features of the chunk
  float* sV = sPq + C * LDF;                        // [C][COLS]
  float* sO = sV + C * COLS;                        // [C][COLS]  dOut
  float* sVD = sO + C * COLS;                       // [C][C]     ψ weight · (v_j · dOut_i), j <= i
  float* sWk = sVD + C * C;                         // [C]        exp(stab_k − C_chunk)
  const int cb = blockIdx.x, col0 = cb * COLS, h = blockIdx.y, b = blockIdx.z, hk = h / GROUP;
  const int tid = threadIdx.x;
  const long long kvRow = ((long long)b * HKV + hk) * SKV;
  const float* phiK = p.phi_k + kvRow * F;
  const float* stabK = p.stab_k + kvRow;
  const float* cm = p.cmax + ((long long)b * HKV + hk) * NCHUNK;
  const long long qRow = ((long long)b * HQ + h) * SQ;
  const float* phiQ = p.phi_q + qRow * F;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;
  const tsr_elem* op = p.dout + b * O_SB + h * O_SH;

  for (int i = tid; i < F * COLS; i += NTHREADS) sS[i] = 0.f;
  for (int i = tid; i < F; i += NTHREADS) sz[i] = 0.f;
  __syncthreads();

  auto load_keys = [&](int ch) {
    const int k0 = ch * C;
    const float cn = cm[ch];
    const float rescale = ch == 0 ? 1.f : expf(cm[ch - 1] - cn);
    if (rescale != 1.f) {
      for (int i = tid; i < F * COLS; i += NTHREADS) sS[i] *= rescale;
      for (int i = tid; i < F; i += NTHREADS) sz[i] *= rescale;
    }
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPk[r * LDF + f] = k0 + r < SKV ? phiK[(long long)(k0 + r) * F + f] : 0.f;
    }
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      sV[i] = k0 + r < SKV && col0 + c < DV ? tsr_to_f32(vp[(k0 + r) * V_SS + col0 + c]) : 0.f;
    }
    for (int r = tid; r < C; r += NTHREADS) sWk[r] = k0 + r < SKV ? expf(stabK[k0 + r] - cn) : 0.f;
    __syncthreads();
  };
${FOLD_KEYS}  auto load_rows = [&](int q0) {
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPq[r * LDF + f] = q0 + r < SQ ? phiQ[(long long)(q0 + r) * F + f] : 0.f;
    }
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      sO[i] = q0 + r < SQ && col0 + c < DV ? tsr_to_f32(op[(q0 + r) * O_SS + col0 + c]) : 0.f;
    }
    __syncthreads();
  };
  // Rows [q0, q0 + C): the state's part plus (causal) the chunk's own keys j <= i.
  auto emit_rows = [&](int q0, bool own) {
    if (own) {
      for (int i = tid; i < C * C; i += NTHREADS) {
        const int qi = i / C, kj = i % C;
        float a = 0.f;
        if (kj <= qi) {
          for (int c = 0; c < COLS; ++c) a = fmaf(sV[kj * COLS + c], sO[qi * COLS + c], a);
          a *= sWk[kj];
        }
        sVD[i] = a;
      }
      __syncthreads();
    }
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      if (q0 + r >= SQ) continue;
      const long long row = qRow + q0 + r;
      float u = 0.f;
      for (int c = 0; c < COLS; ++c) u = fmaf(sS[f * COLS + c], sO[r * COLS + c], u);
      if (own) for (int j = 0; j <= r; ++j) u = fmaf(sVD[r * C + j], sPk[j * LDF + f], u);
      p.upart[(row * NCOL + cb) * F + f] = u;
      if (cb == 0) {
        float z = sz[f];
        if (own) for (int j = 0; j <= r; ++j) z = fmaf(sWk[j], sPk[j * LDF + f], z);
        p.zrow[row * F + f] = z;
      }
    }
    __syncthreads();
  };

  if (CAUSAL) {
    for (int ch = 0; ch * C < SQ; ++ch) {
      load_keys(ch);
      load_rows(ch * C);
      emit_rows(ch * C, true);
      fold_keys();
    }
  } else {
    for (int ch = 0; ch * C < SKV; ++ch) {
      load_keys(ch);
      fold_keys();
    }
    for (int q0 = 0; q0 < SQ; q0 += C) {
      load_rows(q0);
      emit_rows(q0, false);
    }
  }
}

// One warp per query row: u = Σ partials, den = φ̃·z, D, g = ρ (u − D z), dq = VJP; keeps ρ, D.
extern "C" __global__ void __launch_bounds__(128) ${name('dq')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * 4 + warp;
  if (row >= (long long)BATCH * HQ * SQ) return;
  const int s = (int)(row % SQ), h = (int)((row / SQ) % HQ), b = (int)(row / ((long long)SQ * HQ));
  float* xs = reinterpret_cast<float*>(tsr_smem) + warp * WARP_FLOATS;
  float* g = xs + D;
  float* ph = g + F;
  float* bb = ph + F;
  const float* phi = p.phi_q + row * F;
  const float* z = p.zrow + row * F;
  const float* up = p.upart + row * NCOL * F;
  float den = 0.f, ud = 0.f;
  for (int f = lane; f < F; f += 32) {
    const float a = phi[f];
    float u = 0.f;
    for (int c = 0; c < NCOL; ++c) u += up[c * F + f];
    ph[f] = a;
    g[f] = u;
    den = fmaf(a, z[f], den);
    ud = fmaf(a, u, ud);
  }
  for (int o = 16; o > 0; o >>= 1) {
    den += __shfl_xor_sync(0xffffffffu, den, o);
    ud += __shfl_xor_sync(0xffffffffu, ud, o);
  }
  // den <= 0: no attention mass (out = 0, lse = -inf), a constant output: no gradient.
  const bool live = den > 0.f;
  const float rho = live ? 1.f / den : 0.f;
  const float dl = live ? ud * rho : 0.f;
  for (int f = lane; f < F; f += 32) g[f] = live ? (g[f] - dl * z[f]) * rho : 0.f;
  if (lane == 0) { p.rden[row] = rho; p.delta[row] = dl; }
  const tsr_elem* src = p.q + b * Q_SB + h * Q_SH + s * Q_SS;
  for (int c = lane; c < D; c += 32) xs[c] = QSCALE * tsr_to_f32(src[c]);
  __syncwarp();
  tsr_vjp(p, xs, ph, g, bb, QSCALE, p.dq + b * Q_SB + h * Q_SH + s * Q_SS, lane);
}

// Per (batch, KV head, COLS columns): suffix state over the group's rows; dv and partial h_j.
extern "C" __global__ void __launch_bounds__(NTHREADS) ${name('dkdv')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  float* sR = reinterpret_cast<float*>(tsr_smem);  // [F][COLS] Σ ρ_i φ̃_i dOut_i (this CTA's columns)
  float* sr = sR + F * COLS;                        // [F]        Σ ρ_i D_i φ̃_i
  float* sPk = sr + F;                              // [C][LDF]   key features of the chunk
  float* sPq = sPk + C * LDF;                       // [C][LDF]   query features of the chunk
  float* sGk = sPq + C * LDF;                       // [C][LDF]   h_j of the chunk's keys (partial)
  float* sV = sGk + C * LDF;                        // [C][COLS]
  float* sO = sV + C * COLS;                        // [C][COLS]  dOut
  float* sDv = sO + C * COLS;                       // [C][COLS]  dv of the chunk's keys
  float* sB = sDv + C * COLS;                       // [C][C]     ρ_i φ̃_i · ψ_j, j <= i
  float* sE = sB + C * C;                           // [C][C]     ρ_i (dOut_i · v_j) − ρ_i D_i, j <= i
  float* sWk = sE + C * C;                          // [C]        exp(stab_k − C_chunk)
  float* sRho = sWk + C;                            // [C]        ρ_i
  float* sRD = sRho + C;                            // [C]        ρ_i D_i
  const int cb = blockIdx.x, col0 = cb * COLS, hk = blockIdx.y, b = blockIdx.z;
  const bool first = cb == 0;  // block 0 adds the −D_i terms of h_j once
  const int tid = threadIdx.x;
  const long long kvRow = ((long long)b * HKV + hk) * SKV;
  const float* phiK = p.phi_k + kvRow * F;
  const float* stabK = p.stab_k + kvRow;
  const float* cm = p.cmax + ((long long)b * HKV + hk) * NCHUNK;
  const tsr_elem* vp = p.v + b * V_SB + hk * V_SH;

  for (int i = tid; i < F * COLS; i += NTHREADS) sR[i] = 0.f;
  for (int i = tid; i < F; i += NTHREADS) sr[i] = 0.f;
  __syncthreads();

  auto load_keys = [&](int ch) {
    const int k0 = ch * C;
    const float cn = cm[ch];
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPk[r * LDF + f] = k0 + r < SKV ? phiK[(long long)(k0 + r) * F + f] : 0.f;
      sGk[r * LDF + f] = 0.f;
    }
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      sV[i] = k0 + r < SKV && col0 + c < DV ? tsr_to_f32(vp[(k0 + r) * V_SS + col0 + c]) : 0.f;
      sDv[i] = 0.f;
    }
    for (int r = tid; r < C; r += NTHREADS) sWk[r] = k0 + r < SKV ? expf(stabK[k0 + r] - cn) : 0.f;
    __syncthreads();
  };
  auto load_rows = [&](int h, int q0) {
    const long long qRow = ((long long)b * HQ + h) * SQ;
    const float* phiQ = p.phi_q + qRow * F;
    const tsr_elem* op = p.dout + b * O_SB + h * O_SH;
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int r = i / F, f = i % F;
      sPq[r * LDF + f] = q0 + r < SQ ? phiQ[(long long)(q0 + r) * F + f] : 0.f;
    }
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int r = i / COLS, c = i % COLS;
      sO[i] = q0 + r < SQ && col0 + c < DV ? tsr_to_f32(op[(q0 + r) * O_SS + col0 + c]) : 0.f;
    }
    for (int r = tid; r < C; r += NTHREADS) {
      const float rho = q0 + r < SQ ? p.rden[qRow + q0 + r] : 0.f;
      sRho[r] = rho;
      sRD[r] = q0 + r < SQ ? rho * p.delta[qRow + q0 + r] : 0.f;
    }
    __syncthreads();
  };
  auto fold_rows = [&]() {
    for (int i = tid; i < F * COLS; i += NTHREADS) {
      const int f = i / COLS, c = i % COLS;
      float acc = sR[i];
      for (int r = 0; r < C; ++r) acc = fmaf(sPq[r * LDF + f] * sRho[r], sO[r * COLS + c], acc);
      sR[i] = acc;
    }
    for (int f = tid; f < F; f += NTHREADS) {
      float acc = sr[f];
      for (int r = 0; r < C; ++r) acc = fmaf(sPq[r * LDF + f], sRD[r], acc);
      sr[f] = acc;
    }
    __syncthreads();
  };
  // The chunk's keys against the state (rows of later chunks; non-causal: every row).
  auto from_state = [&]() {
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int j = i / COLS, c = i % COLS;
      float acc = 0.f;
      for (int f = 0; f < F; ++f) acc = fmaf(sPk[j * LDF + f], sR[f * COLS + c], acc);
      sDv[i] += acc * sWk[j];
    }
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int j = i / F, f = i % F;
      float acc = first ? -sr[f] : 0.f;
      for (int c = 0; c < COLS; ++c) acc = fmaf(sR[f * COLS + c], sV[j * COLS + c], acc);
      sGk[j * LDF + f] += acc;
    }
    __syncthreads();
  };
  // The chunk's keys against the chunk's own rows i >= j (causal).
  auto own_rows = [&]() {
    for (int i = tid; i < C * C; i += NTHREADS) {
      const int r = i / C, j = i % C;
      float bv = 0.f, ev = 0.f;
      if (j <= r) {
        for (int f = 0; f < F; ++f) bv = fmaf(sPq[r * LDF + f], sPk[j * LDF + f], bv);
        bv *= sRho[r] * sWk[j];
        for (int c = 0; c < COLS; ++c) ev = fmaf(sO[r * COLS + c], sV[j * COLS + c], ev);
        ev = sRho[r] * ev - (first ? sRD[r] : 0.f);
      }
      sB[i] = bv;
      sE[i] = ev;
    }
    __syncthreads();
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int j = i / COLS, c = i % COLS;
      float acc = 0.f;
      for (int r = j; r < C; ++r) acc = fmaf(sB[r * C + j], sO[r * COLS + c], acc);
      sDv[i] += acc;
    }
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int j = i / F, f = i % F;
      float acc = 0.f;
      for (int r = j; r < C; ++r) acc = fmaf(sE[r * C + j], sPq[r * LDF + f], acc);
      sGk[j * LDF + f] += acc;
    }
    __syncthreads();
  };
  auto store_keys = [&](int ch) {
    const int k0 = ch * C;
    float* dvp = p.dv + b * V_SB + hk * V_SH;
    for (int i = tid; i < C * COLS; i += NTHREADS) {
      const int j = i / COLS, c = i % COLS;
      if (k0 + j < SKV && col0 + c < DV) dvp[(k0 + j) * V_SS + col0 + c] = sDv[i];
    }
    for (int i = tid; i < C * F; i += NTHREADS) {
      const int j = i / F, f = i % F;
      if (k0 + j < SKV) p.gkpart[((kvRow + k0 + j) * NCOL + cb) * F + f] = sGk[j * LDF + f];
    }
    __syncthreads();
  };

  if (CAUSAL) {
    for (int ch = NCHUNK - 1; ch >= 0; --ch) {
      if (ch < NCHUNK - 1) {
        // The state's rows were normalised with a later chunk's key maximum (>= this one's).
        const float rescale = expf(cm[ch] - cm[ch + 1]);
        if (rescale != 1.f) {
          for (int i = tid; i < F * COLS; i += NTHREADS) sR[i] *= rescale;
          for (int i = tid; i < F; i += NTHREADS) sr[i] *= rescale;
        }
        __syncthreads();
      }
      const bool keys = ch * C < SKV, rows = ch * C < SQ;
      if (keys) {
        load_keys(ch);
        from_state();
      }
      if (rows) {
        for (int g = 0; g < GROUP; ++g) {
          load_rows(hk * GROUP + g, ch * C);
          if (keys) own_rows();
          fold_rows();
        }
      }
      if (keys) store_keys(ch);
    }
  } else {
    for (int g = 0; g < GROUP; ++g) {
      for (int q0 = 0; q0 < SQ; q0 += C) {
        load_rows(hk * GROUP + g, q0);
        fold_rows();
      }
    }
    for (int ch = 0; ch * C < SKV; ++ch) {
      load_keys(ch);
      from_state();
      store_keys(ch);
    }
  }
}

// One warp per key: h = Σ partials, dk = VJP of h on the key's features, times exp(c_k − C_chunk).
extern "C" __global__ void __launch_bounds__(128) ${name('dk')}(const TsrLinBwdParams p) {
  extern __shared__ __align__(16) unsigned char tsr_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * 4 + warp;
  if (row >= (long long)BATCH * HKV * SKV) return;
  const int s = (int)(row % SKV), hk = (int)((row / SKV) % HKV), b = (int)(row / ((long long)SKV * HKV));
  float* xs = reinterpret_cast<float*>(tsr_smem) + warp * WARP_FLOATS;
  float* g = xs + D;
  float* ph = g + F;
  float* bb = ph + F;
  const float* phi = p.phi_k + row * F;
  const float* gp = p.gkpart + row * NCOL * F;
  for (int f = lane; f < F; f += 32) {
    float acc = 0.f;
    for (int c = 0; c < NCOL; ++c) acc += gp[c * F + f];
    g[f] = acc;
    ph[f] = phi[f];
  }
  const float e = expf(p.stab_k[row] - p.cmax[((long long)b * HKV + hk) * NCHUNK + s / C]);
  const tsr_elem* src = p.k + b * K_SB + hk * K_SH + s * K_SS;
  for (int c = lane; c < D; c += 32) xs[c] = KSCALE * tsr_to_f32(src[c]);
  __syncwarp();
  tsr_vjp(p, xs, ph, g, bb, KSCALE * e, p.dk + b * K_SB + hk * K_SH + s * K_SS, lane);
}
`;
  const rowKernel = (k: string): KernelEntry => ({
    name: name(k),
    threads: 128,
    dynamicSharedBytes: 4 * 4 * warpFloats,
    params,
  });
  const featQ: KernelEntry = { ...rowKernel('feat_q'), dynamicSharedBytes: 4 * 4 * D };
  const featK: KernelEntry = { ...rowKernel('feat_k'), dynamicSharedBytes: 4 * 4 * D };
  const cmax: KernelEntry = { name: name('cmax'), threads: 32, dynamicSharedBytes: 0, params };
  const dqPart: KernelEntry = {
    name: name('dq_part'),
    threads: THREADS,
    dynamicSharedBytes: 4 * fl.dqPart,
    params,
  };
  const dq = rowKernel('dq');
  const dkdv: KernelEntry = {
    name: name('dkdv'),
    threads: THREADS,
    dynamicSharedBytes: 4 * fl.dkdv,
    params,
  };
  const dk = rowKernel('dk');
  return {
    source,
    path: 'linear',
    featQ,
    featK,
    cmax,
    dqPart,
    dq,
    dkdv,
    dk,
    kernels: [featQ, featK, cmax, dqPart, dq, dkdv, dk],
    generatorVersion: GENERATOR_VERSION,
  };
}
