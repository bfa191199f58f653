import { type AttentionInputs, type AttentionSpec, tensorSizes } from '@tessera/core';
import { hashUnit } from '@tessera/core/backend';

/** FNV-1a of a string: the seed of a case, so its inputs depend on its id alone. */
export function seedOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** `n` values uniform in [-amp, amp), a pure function of (seed, stream, index) via core's hash. */
export function seededValues(n: number, seed: number, stream: number, amp = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * (2 * hashUnit([seed, stream, i]) - 1);
  return out;
}

/** Seeded q, k (amplitude `amp`) and v (amplitude 1) for a spec. */
export function seededInputs(spec: AttentionSpec, seed: number, amp = 1): AttentionInputs {
  const n = tensorSizes(spec);
  return {
    q: seededValues(n.q, seed, 0, amp),
    k: seededValues(n.k, seed, 1, amp),
    v: seededValues(n.v, seed, 2),
  };
}
