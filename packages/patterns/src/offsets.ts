import type { OffsetSet } from './layout-helpers.js';

/** Every offset d ≥ 0 (causal). */
export const ALL_OFFSETS: OffsetSet = {
  prev: (x) => x,
  next: (x) => x,
  covers: () => true,
};

/** {k · step : 0 ≤ k < count}: a window (step 1) or a dilated window. */
export function stepOffsets(count: number, step: number): OffsetSet {
  const last = count - 1;
  return {
    prev: (x) => Math.min(Math.floor(x / step), last) * step,
    next: (x) => {
      const k = Math.ceil(x / step);
      return k <= last ? k * step : Number.POSITIVE_INFINITY;
    },
    covers: (lo, hi) =>
      step === 1 ? hi <= last : lo === hi && lo % step === 0 && lo / step <= last,
  };
}

/** {d : d < stride} ∪ {multiples of stride}: a local window plus every stride-th key. */
export function stridedOffsets(stride: number): OffsetSet {
  return {
    prev: (x) => (x < stride ? x : Math.floor(x / stride) * stride),
    next: (x) => (x < stride ? x : Math.ceil(x / stride) * stride),
    // [0, stride] is one run; above it the multiples are isolated unless stride is 1.
    covers: (lo, hi) => stride === 1 || hi <= stride || (lo === hi && lo % stride === 0),
  };
}

const floorPow2 = (x: number): number => 2 ** (31 - Math.clz32(x));

/** {0} ∪ {2^k : k ≥ 0}. */
export const POWER_OF_TWO_OFFSETS: OffsetSet = {
  prev: (x) => (x === 0 ? 0 : floorPow2(x)),
  next: (x) => {
    if (x <= 1) return x;
    const p = floorPow2(x);
    return p === x ? x : 2 * p;
  },
  // {0, 1, 2} is the only run longer than one offset.
  covers: (lo, hi) => hi <= 2 || (lo === hi && floorPow2(lo) === lo),
};

/** {d : d is a multiple of some p in primes} (0 included). */
export function multipleOffsets(primes: readonly number[]): OffsetSet {
  const member = (d: number): boolean => {
    for (const p of primes) if (d % p === 0) return true;
    return false;
  };
  return {
    prev: (x) => {
      let best = 0;
      for (const p of primes) best = Math.max(best, Math.floor(x / p) * p);
      return best;
    },
    next: (x) => {
      let best = Number.POSITIVE_INFINITY;
      for (const p of primes) best = Math.min(best, Math.ceil(x / p) * p);
      return best;
    },
    // Stops at the first offset not covered, so the cost is the run length, not the range.
    covers: (lo, hi) => {
      for (let d = lo; d <= hi; d++) if (!member(d)) return false;
      return true;
    },
  };
}
