// The emulated device of program-emulated-addon.cjs (generated kernels compiled for the host and
// run there) plus what the backward kernels use beyond the program kernels: the 64-bit integer
// atomics and float-to-integer rounding of the softmax pass's fixed-point tensor gradients. Loaded
// through $TESSERA_CUDA_ADDON by the backward tests that run the whole backend without a GPU.
'use strict';
const base = require('./program-emulated-addon.cjs');

// Fibers switch only at barriers, so a read-modify-write is atomic.
const EXTRA = `static inline long long __float2ll_rn(float x) { return std::llrint(x); }
static inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { const unsigned long long old = *a; *a = old + v; return old; }
`;

module.exports = {
  ...base,
  nvrtcCompile: (source) =>
    base.nvrtcCompile(/atomicAdd\(|__float2ll_rn\(/.test(source) ? `${EXTRA}${source}` : source),
};
