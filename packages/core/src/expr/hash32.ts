/**
 * The counter-based hash every backend evaluates identically: pure u32 arithmetic
 * (multiply, xor, shift), so random patterns are functions of their indices alone.
 * mix32 is a 32-bit avalanche finaliser with published low-bias constants.
 */
export const HASH_MUL_1 = 0x7feb352d;
export const HASH_MUL_2 = 0x846ca68b;
/** Added to each argument before mixing so that the hash of 0 is not 0. */
export const HASH_ARG_OFFSET = 0x9e3779b9;
/** 24 bits of the hash become the float: exactly representable in f32, uniform in [0, 1). */
export const HASH_FLOAT_SCALE = 1 / 16777216;

export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, HASH_MUL_1) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, HASH_MUL_2) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** hash(a0, a1, ...) as u32: h = 0; for each arg: h = mix32(h ^ mix32(arg + offset)). */
export function hashU32(args: readonly number[]): number {
  let h = 0;
  for (const a of args) h = mix32(h ^ mix32((a + HASH_ARG_OFFSET) >>> 0));
  return h;
}

/** hash(args) mapped to a float in [0, 1) with 24 bits of resolution. */
export function hashUnit(args: readonly number[]): number {
  return (hashU32(args) >>> 8) * HASH_FLOAT_SCALE;
}
