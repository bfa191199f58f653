import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  packHalf,
  roundToDtype,
  unpackHalf,
} from '../src/index.js';

/** Finite values of a 16-bit format, sorted, found by decoding every bit pattern. */
function finiteValues(decode: (h: number) => number): Float64Array {
  const vals: number[] = [];
  for (let h = 0; h < 0x10000; h++) {
    const v = decode(h);
    if (Number.isFinite(v) && !Object.is(v, -0)) vals.push(v);
  }
  return Float64Array.from(new Set(vals)).sort();
}

/** Round-to-nearest-even by search: the nearest representable value, ties to an even bit pattern. */
function nearest(x: number, values: Float64Array, encode: (v: number) => number): number {
  let lo = 0;
  let hi = values.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if ((values[mid] as number) <= x) lo = mid;
    else hi = mid;
  }
  const a = values[lo] as number;
  const b = values[hi] as number;
  const da = Math.abs(x - a);
  const db = Math.abs(x - b);
  if (da !== db) return da < db ? a : b;
  return (encode(a) & 1) === 0 ? a : b;
}

const f16Values = finiteValues(f16BitsToF32);
const bf16Values = finiteValues(bf16BitsToF32);

describe('f16', () => {
  it('round-trips every finite bit pattern', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = f16BitsToF32(h);
      if (Number.isNaN(v)) expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(v)))).toBe(true);
      else expect(f32ToF16Bits(v)).toBe(h);
    }
  });
  it('rounds to the nearest value, ties to even, within range', () => {
    fc.assert(
      fc.property(fc.float({ min: -65504, max: 65504, noNaN: true }), (x) => {
        expect(f16BitsToF32(f32ToF16Bits(x)) === nearest(x, f16Values, f32ToF16Bits)).toBe(true);
      }),
      { seed: 3, numRuns: 3000 },
    );
  });
  it('overflows to infinity past the largest finite value and keeps signs', () => {
    expect(f16BitsToF32(f32ToF16Bits(70000))).toBe(Number.POSITIVE_INFINITY);
    expect(f16BitsToF32(f32ToF16Bits(-70000))).toBe(Number.NEGATIVE_INFINITY);
    expect(f16BitsToF32(f32ToF16Bits(65519))).toBe(65504); // below the halfway point to 65536
    expect(f16BitsToF32(f32ToF16Bits(65520))).toBe(Number.POSITIVE_INFINITY); // halfway: ties to even (inf)
    expect(Object.is(f16BitsToF32(f32ToF16Bits(-1e-10)), -0)).toBe(true);
  });
});

describe('bf16', () => {
  it('round-trips every finite bit pattern', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = bf16BitsToF32(h);
      if (!Number.isNaN(v)) expect(f32ToBf16Bits(v)).toBe(h);
    }
  });
  it('rounds to the nearest value, ties to even', () => {
    fc.assert(
      fc.property(
        fc.float({ min: Math.fround(-3e38), max: Math.fround(3e38), noNaN: true }),
        (x) => {
          expect(bf16BitsToF32(f32ToBf16Bits(x)) === nearest(x, bf16Values, f32ToBf16Bits)).toBe(
            true,
          );
        },
      ),
      { seed: 4, numRuns: 3000 },
    );
  });
  it('keeps NaN a NaN', () => {
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(Number.NaN)))).toBe(true);
  });
});

describe('array helpers', () => {
  const data = Float32Array.from({ length: 257 }, (_, i) => Math.sin(i * 1.7) * 100);
  it('roundToDtype copies, and equals pack then unpack', () => {
    expect(roundToDtype(data, 'f32')).toEqual(data);
    expect(roundToDtype(data, 'f32')).not.toBe(data);
    for (const dt of ['f16', 'bf16'] as const)
      expect(roundToDtype(data, dt)).toEqual(unpackHalf(packHalf(data, dt), dt));
  });
  it('stays within half an ulp of each format', () => {
    const r16 = roundToDtype(data, 'f16');
    const rb = roundToDtype(data, 'bf16');
    for (let i = 0; i < data.length; i++) {
      const x = data[i] as number;
      expect(Math.abs((r16[i] as number) - x)).toBeLessThanOrEqual(
        Math.abs(x) * 2 ** -11 + 2 ** -25,
      );
      expect(Math.abs((rb[i] as number) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -8);
    }
  });
});
