// Random bench inputs made on the device (large tensors never cross PCIe, nor sit in JS memory),
// reproducible on the host element by element: x_i = bf16((2·hashUnit([seed, i]) − 1) · amp).
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '@tessera/core';
import { hashUnit } from '@tessera/core/backend';
import { exprPrelude } from '../../src/expr-cuda.js';
import { type CudaBackend, type CudaTensor, packParams } from '../../src/index.js';

const FILL_PARAMS = [
  { name: 'p', type: 'ptr', ctype: 'unsigned short*' },
  { name: 'n', type: 'i64', ctype: 'long long' },
  { name: 'seed', type: 'i32', ctype: 'int' },
  { name: 'amp', type: 'f32', ctype: 'float' },
] as const;

function fillSource(dtype: 'bf16' | 'f16'): string {
  return `${exprPrelude()}
struct FillParams { unsigned short* p; long long n; int seed; float amp; };
extern "C" __global__ void tsr_fill(const FillParams f) {
  const unsigned h0 = tsr_hash_step(0u, f.seed);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < f.n; i += (long long)gridDim.x * blockDim.x) {
    const float x = (tsr_hash_unit(tsr_hash_step(h0, (int)i)) * 2.f - 1.f) * f.amp;
    unsigned short r;
    asm("cvt.rn.${dtype}.f32 %0, %1;" : "=h"(r) : "f"(x));
    f.p[i] = r;
  }
}
`;
}

const fills = new Map<string, bigint>();

async function fillFunction(backend: CudaBackend, dtype: 'bf16' | 'f16'): Promise<bigint> {
  const hit = fills.get(dtype);
  if (hit !== undefined) return hit;
  const img = await backend.compiler.compile(fillSource(dtype), `fill-${dtype}`);
  const addon = backend.cuda.addon;
  const fn = addon.moduleGetFunction(addon.moduleLoadData(img.image), 'tsr_fill');
  fills.set(dtype, fn);
  return fn;
}

/** Fills a 16-bit device tensor with seeded uniform values in [−amp, amp). */
export async function fillRandom(
  backend: CudaBackend,
  t: CudaTensor,
  seed: number,
  amp = 1,
): Promise<void> {
  if (t.dtype === 'f32') throw new Error('fillRandom makes 16-bit tensors');
  if (t.length >= 2 ** 31) throw new Error('fillRandom indexes with i32');
  const fn = await fillFunction(backend, t.dtype);
  const params = packParams(FILL_PARAMS, { p: t.ptr, n: t.length, seed, amp });
  const blocks = Math.min(65535, Math.ceil(t.length / 256));
  backend.cuda.addon.launch(fn, [blocks, 1, 1], [256, 1, 1], 0, 0n, params);
}

/** The value fillRandom puts at index `i`, as the device stores it. */
export function randomAt(dtype: 'bf16' | 'f16', seed: number, i: number, amp = 1): number {
  const x = Math.fround(Math.fround(hashUnit([seed, i]) * 2 - 1) * Math.fround(amp));
  return dtype === 'bf16' ? bf16BitsToF32(f32ToBf16Bits(x)) : f16BitsToF32(f32ToF16Bits(x));
}
