// A stand-in for the native addon that RUNS the generated kernels on the host, so the program ops
// (and the flash kernels walking a selection) can be checked end to end without a GPU. Device
// memory is one arena at a fixed address; a compile turns the CUDA C++ into a host executable
// (g++; CUDA threads are fibers, barriers for __syncthreads and warp operations); a launch
// writes the arena to a file, runs the executable, which maps the arena at the same address (so
// device pointers in the parameter struct stay valid), runs the grid and writes the arena back.
// Only what the program kernels and the CUDA-core flash kernel use is emulated: a module that
// needs more (the tensor-core kernel's PTX) fails to compile. Loaded through $TESSERA_CUDA_ADDON.
'use strict';
const { execFile, execFileSync } = require('node:child_process');
const { createHash } = require('node:crypto');
const { existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const BASE = 0x100000000000n;
const work = process.env.TESSERA_EMU_DIR || join(tmpdir(), 'tessera-cuda-emu');
mkdirSync(work, { recursive: true });
let arena = Buffer.alloc(1 << 20);
let top = 256;
const calls = { launch: 0, alloc: 0, free: 0, compile: 0 };
const modules = new Map();
let nextHandle = 1n;

const offset = (ptr, bytes) => {
  const off = Number(ptr - BASE);
  if (!(off >= 0 && off + bytes <= top))
    throw new Error(`emulated device: bad address ${ptr} (+${bytes})`);
  return off;
};
const viewBytes = (v) =>
  v instanceof ArrayBuffer
    ? new Uint8Array(v)
    : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

const RUNTIME = `
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#include <sys/mman.h>
#include <ucontext.h>
// CUDA threads are fibers (ucontext) run round-robin on one OS thread: a barrier arrival yields
// until every participant of the block (or warp) has arrived, so barriers cost a context switch.
struct emu_dim { unsigned x, y, z; };
static emu_dim blockDim, gridDim, blockIdx;
static unsigned char* emu_smem;
struct emu_fiber { ucontext_t ctx; unsigned tid; bool done; };
static std::vector<emu_fiber> emu_fibers;
static ucontext_t emu_main;
static unsigned emu_cur;
struct emu_threadidx { unsigned x, y, z; };
#define threadIdx (emu_threadidx{emu_fibers[emu_cur].tid, 0, 0})
static void emu_yield() {
  const unsigned n = emu_fibers.size(), from = emu_cur;
  unsigned next = from;
  do { next = (next + 1) % n; } while (emu_fibers[next].done && next != from);
  if (next == from) return;
  emu_cur = next;
  swapcontext(&emu_fibers[from].ctx, &emu_fibers[next].ctx);
}
struct emu_barrier { unsigned arrived = 0, phase = 0; };
static emu_barrier emu_block_bar, emu_warp_bar[64];
static void emu_arrive(emu_barrier& b, unsigned participants) {
  const unsigned ph = b.phase;
  if (++b.arrived == participants) { b.arrived = 0; ++b.phase; return; }
  while (b.phase == ph) emu_yield();
}
static float emu_f[64][32];
static unsigned emu_u[64][32];
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n)
#define __restrict__
static inline int emu_w() { return emu_fibers[emu_cur].tid >> 5; }
static inline int emu_l() { return emu_fibers[emu_cur].tid & 31; }
static inline void __syncthreads() { emu_arrive(emu_block_bar, blockDim.x); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_arrive(emu_warp_bar[emu_w()], 32); }
static inline float __shfl_xor_sync(unsigned, float v, int m) {
  emu_f[emu_w()][emu_l()] = v; __syncwarp();
  const float r = emu_f[emu_w()][emu_l() ^ m]; __syncwarp(); return r;
}
static inline float __shfl_sync(unsigned, float v, int src) {
  emu_f[emu_w()][emu_l()] = v; __syncwarp();
  const float r = emu_f[emu_w()][src]; __syncwarp(); return r;
}
static inline unsigned __ballot_sync(unsigned, bool p) {
  emu_u[emu_w()][emu_l()] = p ? 1u : 0u; __syncwarp();
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r |= emu_u[emu_w()][l] << l;
  __syncwarp(); return r;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
// Fibers switch only at barriers, so a read-modify-write is atomic.
static inline int atomicAdd(int* a, int v) { const int old = *a; *a = old + v; return old; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline float __int_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline float __uint_as_float(unsigned x) { return __int_as_float(x); }
static inline unsigned emu_bits(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
static inline int __float2int_rz(float x) { return (int)x; }
static inline float emu_bf16_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
static inline unsigned short emu_f32_bf16(float f) {
  const unsigned b = emu_bits(f);
  if (std::isnan(f)) return (unsigned short)((b >> 16) | 0x40);
  return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
static inline float emu_f16_f32(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
static inline unsigned short emu_f32_f16(float f) { _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h; }
static void (*emu_entry)();
static void emu_start() {
  emu_entry();
  emu_fibers[emu_cur].done = true;
  // The last fiber to finish returns to the launcher; others hand over to a live one.
  for (unsigned i = 0; i < emu_fibers.size(); ++i) if (!emu_fibers[i].done) { emu_yield(); }
  setcontext(&emu_main);
}
template <class P> static void emu_run(void (*k)(const P), const unsigned char* bytes, emu_dim grid, unsigned threads, size_t smem) {
  static P p; std::memcpy(&p, bytes, sizeof(P));
  static void (*kern)(const P); kern = k;
  emu_entry = [] { kern(p); };
  gridDim = grid; blockDim = {threads, 1, 1};
  std::vector<unsigned char> sm(smem + 64);
  emu_smem = sm.data();
  const size_t stack = 64 * 1024;
  std::unique_ptr<char[]> stacks(new char[stack * threads]);
  emu_fibers.assign(threads, emu_fiber{});
  for (unsigned z = 0; z < grid.z; ++z) for (unsigned y = 0; y < grid.y; ++y) for (unsigned x = 0; x < grid.x; ++x) {
    blockIdx = {x, y, z};
    std::memset(sm.data(), 0xcd, sm.size());  // shared memory starts as garbage
    emu_block_bar = {};
    for (auto& w : emu_warp_bar) w = {};
    for (unsigned t = 0; t < threads; ++t) {
      emu_fiber& f = emu_fibers[t];
      f.tid = t; f.done = false;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = stacks.get() + t * stack;
      f.ctx.uc_stack.ss_size = stack;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, emu_start, 0);
    }
    emu_cur = 0;
    swapcontext(&emu_main, &emu_fibers[0].ctx);
  }
}
static std::vector<unsigned char> emu_file(const char* path) {
  FILE* f = std::fopen(path, "rb"); if (!f) { std::perror(path); std::exit(2); }
  std::fseek(f, 0, SEEK_END); long n = std::ftell(f); std::fseek(f, 0, SEEK_SET);
  std::vector<unsigned char> v(n); if (n && std::fread(v.data(), 1, n, f) != (size_t)n) std::exit(3); std::fclose(f); return v;
}
`;

/** The host version of each <tsr-ptx> block, chosen by what the block defines. */
function hostPtx(block, dtype) {
  if (block.includes('tsr_to_f32(tsr_elem')) {
    if (dtype === 'f32')
      return 'static inline float tsr_to_f32(tsr_elem x) { return x; }\nstatic inline tsr_elem tsr_from_f32(float x) { return x; }';
    const s = dtype === 'bf16' ? 'bf16' : 'f16';
    return `static inline float tsr_to_f32(tsr_elem x) { return emu_${s}_f32(x); }\nstatic inline tsr_elem tsr_from_f32(float x) { return emu_f32_${s}(x); }`;
  }
  const conv = /tsr_(f32_to_(?:bf16|f16)|(?:bf16|f16)_to_f32)\(/.exec(block);
  if (conv) {
    const [a, , b] = conv[1].split('_');
    return a === 'f32'
      ? `static inline unsigned short tsr_f32_to_${b}(float x) { return emu_f32_${b}(x); }`
      : `static inline float tsr_${a}_to_f32(unsigned short x) { return emu_${a}_f32(x); }`;
  }
  throw new Error('emulated device: this module needs PTX the host emulation does not provide');
}

function hostSource(source) {
  const dtype = /\/\/ dtype (\w+)/.exec(source)?.[1] ?? 'f32';
  const names = [
    ...source.matchAll(/extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(/g),
  ].map((m) => m[1]);
  const body = source
    .replace(/\/\/ <tsr-ptx>[\s\S]*?\/\/ <\/tsr-ptx>/g, (b) => hostPtx(b, dtype))
    .replaceAll(
      'extern __shared__ __align__(16) unsigned char tsr_smem[];',
      'unsigned char* tsr_smem = emu_smem;',
    )
    .replaceAll('#pragma nv_diag_suppress 177', '');
  const main = `int main(int argc, char** argv) {
  // argv: kernel grid.x grid.y grid.z threads smem params arena base size
  const unsigned long long base = std::strtoull(argv[8], nullptr, 16), size = std::strtoull(argv[9], nullptr, 10);
  void* at = mmap((void*)base, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (at != (void*)base) { std::fprintf(stderr, "cannot map the arena at %llx\\n", base); return 4; }
  auto mem = emu_file(argv[7]); std::memcpy(at, mem.data(), mem.size());
  auto params = emu_file(argv[6]);
  const emu_dim grid{(unsigned)std::atoi(argv[2]), (unsigned)std::atoi(argv[3]), (unsigned)std::atoi(argv[4])};
  const unsigned threads = std::atoi(argv[5]);
  const size_t smem = std::strtoull(argv[10], nullptr, 10);
${names.map((n) => `  if (!std::strcmp(argv[1], "${n}")) emu_run(${n}, params.data(), grid, threads, smem);`).join('\n')}
  FILE* f = std::fopen(argv[7], "wb"); std::fwrite(at, 1, mem.size(), f); std::fclose(f);
  return 0;
}
`;
  return `#include "emu-runtime.h"\n${body}\n${main}`;
}

const FLAGS = ['-std=c++20', '-O1', '-pthread', '-w'];
let header = false;
/** The runtime as a precompiled header (most of a module's compile time is the C++ headers). */
function runtimeHeader() {
  if (header) return;
  const h = join(work, 'emu-runtime.h');
  if (!existsSync(`${h}.gch`) || readFileSync(h, 'utf8') !== RUNTIME) {
    writeFileSync(h, RUNTIME);
    execFileSync('g++', [...FLAGS, '-x', 'c++-header', '-o', `${h}.gch`, h], { stdio: 'pipe' });
  }
  header = true;
}

function ensure(bytes) {
  if (top + bytes <= arena.length) return;
  const grown = Buffer.alloc(Math.max(arena.length * 2, top + bytes + (1 << 20)));
  arena.copy(grown, 0, 0, top);
  arena = grown;
}

module.exports = {
  abi: 1,
  calls,
  emulated: true,
  loadDriver: () => ({ path: 'emulated-device' }),
  init: () => ({ deviceCount: 1, driverVersion: 13000 }),
  deviceInfo: () => ({
    name: 'Emulated GPU (host threads)',
    major: 9,
    minor: 0,
    multiprocessors: 1,
    l2CacheBytes: 1 << 20,
    maxSharedPerBlockOptin: 232448,
    maxThreadsPerBlock: 1024,
    totalMemory: 1 << 30,
  }),
  useDevice: () => {},
  releaseDevice: () => {},
  memGetInfo: () => ({ free: (1 << 30) - top, total: 1 << 30 }),
  memAlloc: (bytes) => {
    if (!(bytes > 0)) throw new Error(`memAlloc(${bytes})`);
    calls.alloc++;
    const size = Math.ceil(bytes / 256) * 256;
    ensure(size);
    const off = top;
    top += size;
    arena.fill(0xff, off, off + size); // NaN: what a kernel fails to write cannot pass for data
    return BASE + BigInt(off);
  },
  memFree: () => {
    calls.free++;
  },
  memsetD8: (ptr, value, bytes) => {
    const off = offset(ptr, bytes);
    arena.fill(value, off, off + bytes);
  },
  memcpyDtoD: (dst, src, bytes) => {
    arena.copy(arena, offset(dst, bytes), offset(src, bytes), offset(src, bytes) + bytes);
  },
  memcpyHtoD: async (dst, view) => {
    const b = viewBytes(view);
    arena.set(b, offset(dst, b.length));
  },
  memcpyDtoH: async (src, view) => {
    const b = viewBytes(view);
    const off = offset(src, b.length);
    b.set(arena.subarray(off, off + b.length));
  },
  moduleLoadData: (image) => {
    const exe = Buffer.from(viewBytes(image)).toString('utf8');
    if (!existsSync(exe)) throw new Error(`emulated module ${exe} is missing`);
    const h = nextHandle++;
    modules.set(h, exe);
    return h;
  },
  moduleUnload: () => {},
  moduleGetFunction: (mod, name) => {
    const h = nextHandle++;
    modules.set(h, { exe: modules.get(mod), name });
    return h;
  },
  funcSetAttribute: () => {},
  funcGetAttributes: () => ({
    numRegs: 0,
    localBytes: 0,
    staticSharedBytes: 0,
    maxThreadsPerBlock: 1024,
  }),
  launch: (fn, grid, block, shared, _stream, params) => {
    const f = modules.get(fn);
    if (!f || typeof f !== 'object') throw new Error('launch: unknown function');
    if (grid.some((g) => !(g >= 1 && g < 2 ** 31)) || !(block[0] >= 1 && block[0] <= 1024))
      throw new Error(`launch: bad grid ${grid} / block ${block}`);
    calls.launch++;
    const mem = join(work, `arena-${process.pid}.bin`);
    const par = join(work, `params-${process.pid}.bin`);
    writeFileSync(mem, arena.subarray(0, top));
    writeFileSync(par, params);
    const size = Math.ceil(top / 4096) * 4096;
    execFileSync(
      f.exe,
      [
        f.name,
        ...grid.map(String),
        String(block[0]),
        par,
        mem,
        BASE.toString(16),
        String(size),
        String(shared),
      ],
      { stdio: 'pipe', timeout: 600_000 },
    );
    readFileSync(mem).copy(arena, 0);
  },
  streamCreate: () => nextHandle++,
  streamDestroy: () => {},
  streamSynchronize: async () => {},
  ctxSynchronize: async () => {},
  eventCreate: () => nextHandle++,
  eventDestroy: () => {},
  eventRecord: () => {},
  eventSynchronize: async () => {},
  eventElapsedTime: () => 0,
  loadNvrtc: () => ({ path: 'g++', version: 'emu' }),
  nvrtcCompile: (source) =>
    new Promise((resolve) => {
      calls.compile++;
      let host;
      try {
        runtimeHeader();
        host = hostSource(source);
      } catch (e) {
        resolve({ ok: false, log: e.message, status: 1 });
        return;
      }
      const key = createHash('sha256').update(host).digest('hex').slice(0, 24);
      const exe = join(work, `k-${key}`);
      const image = Buffer.from(exe);
      if (existsSync(exe)) {
        resolve({ ok: true, log: '', status: 0, image, format: 'cubin' });
        return;
      }
      const src = join(work, `k-${key}.cc`);
      writeFileSync(src, host);
      const tmp = `${exe}.${process.pid}.tmp`;
      execFile('g++', [...FLAGS, '-I', work, '-o', tmp, src], (err, _out, stderr) => {
        if (err) resolve({ ok: false, log: String(stderr), status: 1 });
        else {
          renameSync(tmp, exe);
          resolve({ ok: true, log: '', status: 0, image, format: 'cubin' });
        }
      });
    }),
};
