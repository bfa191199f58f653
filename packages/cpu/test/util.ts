import {
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  tensorSizes,
} from '@tessera/core';
import { hashUnit } from '@tessera/core/backend';
import { expect } from 'vitest';

/** Seeded uniform values in [-amp, amp): a pure function of (seed, tensor, index). */
export function seeded(n: number, seed: number, tensorId: number, amp = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * (2 * hashUnit([seed, tensorId, i]) - 1);
  return out;
}

export function inputsFor(spec: AttentionSpec, seed: number, amp = 1): AttentionInputs {
  const n = tensorSizes(spec);
  return { q: seeded(n.q, seed, 0, amp), k: seeded(n.k, seed, 1, amp), v: seeded(n.v, seed, 2) };
}

/** ‖a − b‖ / ‖b‖ (absolute when b is 0). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Same fully masked rows (lse -Infinity in both), lse close elsewhere, out close, no NaN. */
export function expectClose(got: AttentionOutputs, want: AttentionOutputs, tol: number): void {
  expect(got.out.length).toBe(want.out.length);
  expect(got.lse.length).toBe(want.lse.length);
  expect(got.out.some(Number.isNaN)).toBe(false);
  expect(got.lse.some(Number.isNaN)).toBe(false);
  for (let i = 0; i < want.lse.length; i++) {
    const g = got.lse[i];
    const w = want.lse[i];
    if (w === Number.NEGATIVE_INFINITY || g === Number.NEGATIVE_INFINITY) {
      expect(g, `lse[${i}]`).toBe(w);
    } else if (Math.abs(g - w) > tol * Math.max(1, Math.abs(w))) {
      expect.fail(`lse[${i}] = ${g}, expected ${w} (tolerance ${tol})`);
    }
  }
  const e = relErr(got.out, want.out);
  if (!(e <= tol)) expect.fail(`relative error of out ${e} > ${tol}`);
}
