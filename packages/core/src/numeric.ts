/** IEEE f16 and bfloat16 conversions, round-to-nearest-even, as devices do on a store. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0] as number;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (exp === 0) return sign * m * 2 ** -24;
  if (exp === 0x1f) return m ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + m / 1024) * 2 ** (exp - 15);
}

export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0] as number;
  if (Number.isNaN(x)) return ((b >>> 16) & 0x8000) | 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0] as number;
}

/** The values a device sees after storing `data` as `dtype` (a copy; f32 is copied unchanged). */
export function roundToDtype(data: Float32Array, dtype: 'f32' | 'f16' | 'bf16'): Float32Array {
  const out = new Float32Array(data.length);
  if (dtype === 'f32') {
    out.set(data);
    return out;
  }
  const to = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
  const from = dtype === 'f16' ? f16BitsToF32 : bf16BitsToF32;
  for (let i = 0; i < data.length; i++) out[i] = from(to(data[i] as number));
  return out;
}

/** `data` packed as 16-bit words of `dtype` (for uploading f16/bf16 tensors). */
export function packHalf(data: Float32Array, dtype: 'f16' | 'bf16'): Uint16Array {
  const to = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = to(data[i] as number);
  return out;
}

/** 16-bit words of `dtype` back to f32 values. */
export function unpackHalf(data: Uint16Array, dtype: 'f16' | 'bf16'): Float32Array {
  const from = dtype === 'f16' ? f16BitsToF32 : bf16BitsToF32;
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = from(data[i] as number);
  return out;
}
