// Runs generated CUDA kernels on the host: the kernel text is compiled with g++ against a small
// emulation of the CUDA execution model (one std::thread per CUDA thread, std::barrier for
// __syncthreads and for warp-synchronous shuffles) and of the PTX the tensor-core kernel uses
// (ldmatrix, mma.sync m16n8k16, cp.async, cvt), rebuilt from the PTX ISA's fragment layouts.
// Slow, so only for small shapes; it checks the generated code's logic (layout walk, masking,
// online softmax, fragment bookkeeping, the linear scan) where CI has no GPU.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  blockLayout,
  packHalf,
  tensorSizes,
  unpackHalf,
} from '@tessera/core';
import { featureDim, linearInputScales, randomFeatureMatrix } from '@tessera/core/backend';
import { strides } from '../src/emit/common.js';
import {
  type CudaModuleSource,
  type EmitOptions,
  emitCuda,
  launchGeometry,
} from '../src/emit/index.js';

export const RUNTIME = `
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
struct emu_dim { unsigned x, y, z; };
static thread_local emu_dim threadIdx, blockIdx;
static emu_dim blockDim, gridDim;
static thread_local unsigned char* emu_smem;
static std::barrier<>* emu_block;
static std::barrier<>* emu_warp[32];
static float emu_f[32][32];
static unsigned emu_u[32][32][6];
static const void* emu_p[32][32];
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n)
#define __restrict__
static inline int emu_lane() { return threadIdx.x & 31; }
static inline int emu_w() { return threadIdx.x >> 5; }
static inline void __syncthreads() { emu_block->arrive_and_wait(); }
static inline void __syncwarp() { emu_warp[emu_w()]->arrive_and_wait(); }
static inline float __shfl_xor_sync(unsigned, float v, int m) {
  emu_f[emu_w()][emu_lane()] = v; __syncwarp();
  float r = emu_f[emu_w()][emu_lane() ^ m]; __syncwarp(); return r;
}
static inline float __shfl_sync(unsigned, float v, int src) {
  emu_f[emu_w()][emu_lane()] = v; __syncwarp();
  float r = emu_f[emu_w()][src]; __syncwarp(); return r;
}
static inline float __int_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline float __uint_as_float(unsigned x) { return __int_as_float(x); }
static inline unsigned emu_bits(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
static inline int __float2int_rz(float x) { return (int)x; }
static inline long long __float2ll_rn(float x) { return std::llrint(x); }
static inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
static inline float emu_bf16_to_f32(unsigned short h) { return __int_as_float((unsigned)h << 16); }
static inline unsigned short emu_f32_to_bf16(float f) {
  unsigned b = emu_bits(f);
  if (std::isnan(f)) return (unsigned short)((b >> 16) | 0x40);
  return (unsigned short)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}
static inline float emu_f16_to_f32(unsigned short h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? std::ldexp((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp((float)(m | 1024), e - 25);
  return s ? -v : v;
}
static inline unsigned short emu_f32_to_f16(float f) {
  // Round to nearest even through double arithmetic on the scaled mantissa.
  unsigned short s = std::signbit(f) ? 0x8000 : 0;
  float a = std::fabs(f);
  if (std::isnan(f)) return s | 0x7e00;
  if (a >= 65520.f) return s | 0x7c00;
  if (a < std::ldexp(1.f, -14)) return s | (unsigned short)std::nearbyint(a * std::ldexp(1.f, 24));
  int e; float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  unsigned mant = (unsigned)std::nearbyint(std::ldexp(m, 11));  // 11 bits incl. implicit
  if (mant == 2048) { mant = 1024; e++; }
  if (e + 14 >= 31) return s | 0x7c00;
  return s | (unsigned short)(((e + 14) << 10) | (mant & 1023));
}
template <class P> void emu_launch(void (*k)(const P), const P& p, emu_dim grid, unsigned threads, size_t smem) {
  gridDim = grid; blockDim = {threads, 1, 1};
  std::vector<unsigned char> sm(smem + 64);
  for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x) {
    std::barrier<> block(threads);
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) { warps.emplace_back(new std::barrier<>(32)); emu_warp[w] = warps.back().get(); }
    emu_block = &block;
    std::memset(sm.data(), 0xcd, sm.size());  // garbage, as real shared memory starts
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t)
      ts.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; emu_smem = sm.data(); k(p); });
    for (auto& th : ts) th.join();
  }
}
template <class T> std::vector<T> emu_read(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb"); if (!f) { std::perror(path.c_str()); std::exit(2); }
  std::fseek(f, 0, SEEK_END); long n = std::ftell(f); std::fseek(f, 0, SEEK_SET);
  std::vector<T> v(n / sizeof(T) + 1); if (n && std::fread(v.data(), 1, n, f) != (size_t)n) std::exit(3); std::fclose(f); return v;
}
template <class T> void emu_write(const std::string& path, const T* d, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb"); std::fwrite(d, sizeof(T), n, f); std::fclose(f);
}
`;

function ptxEmulation(dtype: AttentionSpec['dtype']): { prelude: string; mma: string } {
  const h2f = dtype === 'bf16' ? 'emu_bf16_to_f32' : 'emu_f16_to_f32';
  const f2h = dtype === 'bf16' ? 'emu_f32_to_bf16' : 'emu_f32_to_f16';
  const prelude =
    dtype === 'f32'
      ? 'static inline float tsr_to_f32(tsr_elem x) { return x; }\nstatic inline tsr_elem tsr_from_f32(float x) { return x; }'
      : `static inline float tsr_to_f32(tsr_elem x) { return ${h2f}(x); }\nstatic inline tsr_elem tsr_from_f32(float x) { return ${f2h}(x); }`;
  const mma = `
static inline void tsr_cp_async16(void* dst, const void* src, int bytes) { if (bytes) std::memcpy(dst, src, 16); else std::memset(dst, 0, 16); }
static inline void tsr_cp_commit() {}
template <int N> static inline void tsr_cp_wait() {}
static inline void tsr_ldsm_x4(unsigned (&r)[4], const void* p) {
  const int w = emu_w(), l = emu_lane();
  emu_p[w][l] = p; __syncwarp();
  for (int i = 0; i < 4; ++i) {
    const unsigned short* row = (const unsigned short*)emu_p[w][i * 8 + l / 4];
    r[i] = row[2 * (l % 4)] | ((unsigned)row[2 * (l % 4) + 1] << 16);
  }
  __syncwarp();
}
static inline void tsr_ldsm_x4_t(unsigned (&r)[4], const void* p) {
  const int w = emu_w(), l = emu_lane();
  emu_p[w][l] = p; __syncwarp();
  for (int i = 0; i < 4; ++i) {
    const unsigned short lo = ((const unsigned short*)emu_p[w][i * 8 + 2 * (l % 4)])[l / 4];
    const unsigned short hi = ((const unsigned short*)emu_p[w][i * 8 + 2 * (l % 4) + 1])[l / 4];
    r[i] = lo | ((unsigned)hi << 16);
  }
  __syncwarp();
}
static inline float emu_half(unsigned reg, int hi) { return ${h2f}((unsigned short)(hi ? reg >> 16 : reg & 0xffff)); }
// A (16x16, row-major) and B (16x8, col-major) rebuilt from the warp's fragments (PTX ISA layouts).
static inline void tsr_mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  const int w = emu_w(), l = emu_lane();
  for (int i = 0; i < 4; ++i) emu_u[w][l][i] = a[i];
  emu_u[w][l][4] = b0; emu_u[w][l][5] = b1;
  __syncwarp();
  auto A = [&](int row, int col) {
    const int g = row % 8, t = (col % 8) / 2, reg = (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0);
    return emu_half(emu_u[w][g * 4 + t][reg], col % 2);
  };
  auto B = [&](int k, int n) {
    const int t = (k % 8) / 2, reg = 4 + (k >= 8 ? 1 : 0);
    return emu_half(emu_u[w][n * 4 + t][reg], k % 2);
  };
  const int g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
    float acc = 0.f;
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    c[i] += acc;
  }
  __syncwarp();
}
static inline unsigned tsr_pack2(float lo, float hi) { return ${f2h}(lo) | ((unsigned)${f2h}(hi) << 16); }
static inline float tsr_exp2(float x) { return std::exp2(x); }
`;
  return { prelude, mma };
}

/** The generated module made host-compilable: PTX blocks swapped, shared memory from the emulator. */
export function hostKernel(
  module: Pick<CudaModuleSource, 'source'>,
  dtype: AttentionSpec['dtype'],
): string {
  const emu = ptxEmulation(dtype);
  let first = true;
  return module.source
    .replace(/\/\/ <tsr-ptx>[\s\S]*?\/\/ <\/tsr-ptx>/g, () => {
      const r = first ? emu.prelude : emu.mma;
      first = false;
      return r;
    })
    .replaceAll(
      'extern __shared__ __align__(16) unsigned char tsr_smem[];',
      'unsigned char* tsr_smem = emu_smem;',
    )
    .replaceAll('#pragma nv_diag_suppress 177', '')
    .replaceAll('extern "C" ', ''); // C++ linkage: each case's kernels live in its own namespace
}

export interface EmulatedCase {
  readonly name: string;
  readonly spec: AttentionSpec;
  readonly inputs: AttentionInputs;
  /** Tile options for emitCuda (default: its own choice). */
  readonly options?: EmitOptions;
}

/** One case's namespace: the kernel plus a run(dir) that reads inputs, launches, writes outputs. */
function caseUnit(index: number, c: EmulatedCase): string {
  const { spec } = c;
  const module = emitCuda(spec, c.options);
  const elem = spec.dtype === 'f32' ? 'float' : 'unsigned short';
  const sizes = tensorSizes(spec);
  const lines: string[] = [];
  if (module.path === 'linear') {
    const [feat, scan] = module.kernels;
    if (!feat || !scan) throw new Error('linear module needs two kernels');
    const F = featureDim(spec);
    const sc = linearInputScales(spec.scale);
    const qs = strides(spec, spec.headsQ, spec.seqQ, spec.headDim);
    const ks = strides(spec, spec.headsKV, spec.seqKV, spec.headDim);
    const B = spec.batch;
    lines.push(
      `auto W = emu_read<float>(dir + "/w.bin");`,
      `std::vector<float> phiQ(${B * spec.headsQ * spec.seqQ * F}), stabQ(${B * spec.headsQ * spec.seqQ}), phiK(${B * spec.headsKV * spec.seqKV * F}), stabK(${B * spec.headsKV * spec.seqKV});`,
      `TsrFeatureParams f{}; f.w = W.data();`,
      `f.src = q.data(); f.phi = phiQ.data(); f.stab = stabQ.data(); f.s_b = ${qs.batch}; f.s_h = ${qs.head}; f.s_r = ${qs.row}; f.heads = ${spec.headsQ}; f.seq = ${spec.seqQ}; f.scale = ${sc.query};`,
      `emu_launch(${feat.name}, f, {${Math.ceil((B * spec.headsQ * spec.seqQ) / 4)}, 1, 1}, ${feat.threads}, ${feat.dynamicSharedBytes});`,
      `f.src = k.data(); f.phi = phiK.data(); f.stab = stabK.data(); f.s_b = ${ks.batch}; f.s_h = ${ks.head}; f.s_r = ${ks.row}; f.heads = ${spec.headsKV}; f.seq = ${spec.seqKV}; f.scale = ${sc.key};`,
      `emu_launch(${feat.name}, f, {${Math.ceil((B * spec.headsKV * spec.seqKV) / 4)}, 1, 1}, ${feat.threads}, ${feat.dynamicSharedBytes});`,
      `TsrScanParams s{}; s.phi_q = phiQ.data(); s.stab_q = stabQ.data(); s.phi_k = phiK.data(); s.stab_k = stabK.data(); s.v = v.data(); s.out = out.data(); s.lse = lse.data();`,
      `emu_launch(${scan.name}, s, {${Math.ceil(spec.headDimV / 32)}, ${spec.headsQ}, ${B}}, ${scan.threads}, ${scan.dynamicSharedBytes});`,
    );
  } else {
    const entry = module.kernels[0];
    if (!entry) throw new Error('no kernel');
    const layout = blockLayout(spec, { blockQ: module.blockQ, blockKV: module.blockKV });
    const geometry = launchGeometry(spec, module, layout);
    lines.push(
      `auto rs = emu_read<int>(dir + "/rs.bin"); auto kb = emu_read<int>(dir + "/kb.bin"); auto fu = emu_read<unsigned char>(dir + "/full.bin");`,
      `TsrParams p{}; p.q = q.data(); p.k = k.data(); p.v = v.data(); p.out = out.data(); p.lse = lse.data();`,
      `p.row_start = rs.data(); p.kv_blocks = kb.data(); p.full = fu.data(); p.layout_batches = ${layout.batches}; p.layout_heads = ${layout.heads};`,
      ...(geometry.order
        ? [`auto qo = emu_read<int>(dir + "/order.bin"); p.q_order = qo.data();`]
        : []),
      ...spec.tensors.map(
        (t, i) =>
          `auto t${i} = emu_read<${t.dtype === 'f32' ? 'float' : 'int'}>(dir + "/t${i}.bin"); p.t${i} = t${i}.data();`,
      ),
      `emu_launch(${entry.name}, p, {${geometry.grid.join(', ')}}, ${entry.threads}, ${entry.dynamicSharedBytes});`,
    );
  }
  return `namespace tsr_case_${index} {
${hostKernel(module, spec.dtype)}
void run(const std::string& dir) {
  auto q = emu_read<${elem}>(dir + "/q.bin"); auto k = emu_read<${elem}>(dir + "/k.bin"); auto v = emu_read<${elem}>(dir + "/v.bin");
  std::vector<${elem}> out(${sizes.out}); std::vector<float> lse(${sizes.lse}, NAN);
  std::fill(out.begin(), out.end(), (${elem})${spec.dtype === 'f32' ? 'NAN' : '0x7fc1'});
  ${lines.join('\n  ')}
  emu_write(dir + "/out.bin", out.data(), out.size());
  emu_write(dir + "/lse.bin", lse.data(), lse.size());
}
}  // namespace tsr_case_${index}
`;
}

/** Writes each case's inputs, builds one host program for all cases, runs it, reads outputs. */
export function runEmulated(dir: string, cases: readonly EmulatedCase[]): AttentionOutputs[] {
  const units: string[] = [];
  cases.forEach((c, i) => {
    const d = join(dir, `case${i}`);
    mkdirSync(d, { recursive: true });
    const { spec, inputs } = c;
    for (const name of ['q', 'k', 'v'] as const) {
      const x = inputs[name];
      writeFileSync(join(d, `${name}.bin`), spec.dtype === 'f32' ? x : packHalf(x, spec.dtype));
    }
    const module = emitCuda(spec, c.options);
    if (module.path === 'linear') {
      const w =
        spec.kernel.type === 'linear' &&
        (spec.kernel.featureMap === 'favor+' || spec.kernel.featureMap === 'trig-rf')
          ? randomFeatureMatrix(spec.kernel, spec.headDim)
          : new Float32Array(1);
      writeFileSync(join(d, 'w.bin'), w);
    } else {
      const layout = blockLayout(spec, { blockQ: module.blockQ, blockKV: module.blockKV });
      writeFileSync(join(d, 'rs.bin'), layout.rowStart);
      writeFileSync(
        join(d, 'kb.bin'),
        layout.kvBlocks.length ? layout.kvBlocks : new Int32Array(1),
      );
      writeFileSync(join(d, 'full.bin'), layout.full.length ? layout.full : new Uint8Array(1));
      const { order } = launchGeometry(spec, module, layout);
      if (order) writeFileSync(join(d, 'order.bin'), order);
      for (const [ti, t] of spec.tensors.entries()) writeFileSync(join(d, `t${ti}.bin`), t.data);
    }
    units.push(caseUnit(i, c));
  });
  const main = `int main(int argc, char** argv) {
  const std::string root = argv[1];
${cases.map((_, i) => `  tsr_case_${i}::run(root + "/case${i}");`).join('\n')}
}
`;
  const src = join(dir, 'emulated.cc');
  writeFileSync(src, `${RUNTIME}\n${units.join('\n')}\n${main}`);
  const exe = join(dir, 'emulated');
  execFileSync('g++', ['-std=c++20', '-O1', '-pthread', '-w', '-o', exe, src], { stdio: 'pipe' });
  execFileSync(exe, [dir], { stdio: 'pipe', timeout: 300_000 });
  return cases.map(({ spec }, i) => {
    const d = join(dir, `case${i}`);
    const outBytes = readFileSync(join(d, 'out.bin'));
    const out =
      spec.dtype === 'f32'
        ? new Float32Array(outBytes.buffer, outBytes.byteOffset, outBytes.byteLength / 4).slice()
        : unpackHalf(
            new Uint16Array(
              outBytes.buffer.slice(outBytes.byteOffset, outBytes.byteOffset + outBytes.byteLength),
            ),
            spec.dtype,
          );
    const lseBytes = readFileSync(join(d, 'lse.bin'));
    const lse = new Float32Array(
      lseBytes.buffer,
      lseBytes.byteOffset,
      lseBytes.byteLength / 4,
    ).slice();
    return { out, lse };
  });
}
