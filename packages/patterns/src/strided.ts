import {
  type BlockLayout,
  defineMask,
  type Expr,
  type LayoutContext,
  lit,
  type Mask,
  SpecError,
  vars,
} from '@tessera/core';
import { type OffsetSet, toeplitzLayout } from './layout-helpers.js';
import { multipleOffsets, POWER_OF_TWO_OFFSETS, stridedOffsets } from './offsets.js';
import { bool, options, positiveInt } from './validate.js';

const { q, kv } = vars;

export interface StrideOptions {
  /** Causal (default true): offsets `q − kv ≥ 0`. Otherwise the pattern uses `|q − kv|`. */
  readonly causal?: boolean;
}

/** `ok(a)` over a = q − kv (causal, with a ≥ 0) or a = |q − kv|. */
function toeplitzExpr(isCausal: boolean, ok: (a: Expr) => Expr): Expr {
  const d = q.sub(kv);
  return isCausal ? d.ge(0).and(ok(d)) : ok(d.abs());
}

function checkStride(where: string, name: string, stride: number, ctx: LayoutContext): void {
  if (stride >= ctx.seqKV) {
    throw new SpecError(
      `${where}: ${name} (${stride}) must be smaller than seqKV (${ctx.seqKV}), or it strides past every key`,
    );
  }
}

const layoutOf =
  (half: OffsetSet, isCausal: boolean, check: (ctx: LayoutContext) => void) =>
  (ctx: LayoutContext): BlockLayout => {
    check(ctx);
    return toeplitzLayout(ctx, [half], isCausal);
  };

/**
 * Fixed stride, as in the Sparse Transformer's strided attention (its two heads merged into one
 * mask): with `a = q − kv` (causal, the default, requiring `a ≥ 0`) or `a = |q − kv|`, query `q`
 * attends to key `kv` when `a < stride` (the local window) or `a` is a multiple of `stride`
 * (every stride-th key further away). `stride` must be smaller than seqKV.
 */
export function strided(stride: number, opts?: StrideOptions): Mask {
  const where = 'strided';
  const o = options<StrideOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, true);
  const s = positiveInt(where, 'stride', stride);
  return defineMask(
    toeplitzExpr(isCausal, (a) => a.lt(s).or(a.mod(s).eq(0))),
    {
      name: `strided(${s}${isCausal ? ', causal' : ''})`,
      layout: layoutOf(stridedOffsets(s), isCausal, (ctx) => checkStride(where, 'stride', s, ctx)),
    },
  );
}

/**
 * Exponential stride (LogSparse style): query `q` attends to key `kv` when `a = q − kv` (causal,
 * the default) or `a = |q − kv|` is 0 or a power of two (1, 2, 4, 8, …), so each query sees
 * O(log N) keys. Evaluated as `a == 0 || 2^30 mod a == 0`, exact for every offset below 2^31.
 */
export function exponentialStride(opts?: StrideOptions): Mask {
  const where = 'exponentialStride';
  const o = options<StrideOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, true);
  return defineMask(
    toeplitzExpr(isCausal, (a) => a.eq(0).or(lit(1073741824).mod(a).eq(0))),
    {
      name: `exponential-stride(${isCausal ? 'causal' : 'symmetric'})`,
      layout: layoutOf(POWER_OF_TWO_OFFSETS, isCausal, () => {}),
    },
  );
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let f = 2; f * f <= n; f++) if (n % f === 0) return false;
  return true;
}

/**
 * Prime strides: query `q` attends to key `kv` when `a = q − kv` (causal, the default) or
 * `a = |q − kv|` is a multiple of at least one of `primes` (offset 0 included). Distinct primes
 * interleave without sharing a period, so together they reach many offsets with few keys each.
 * Every prime must be smaller than seqKV.
 */
export function primeStride(primes: readonly number[], opts?: StrideOptions): Mask {
  const where = 'primeStride';
  const o = options<StrideOptions>(where, opts, ['causal']);
  const isCausal = bool(where, 'causal', o.causal, true);
  if (!Array.isArray(primes) || primes.length === 0) {
    throw new SpecError(`${where}: primes must be a non-empty array of prime numbers`);
  }
  const ps = primes.map((p, i) => positiveInt(where, `primes[${i}]`, p));
  ps.forEach((p, i) => {
    if (!isPrime(p)) throw new SpecError(`${where}: primes[${i}] (${p}) is not a prime`);
    if (ps.indexOf(p) !== i) throw new SpecError(`${where}: prime ${p} is listed twice`);
  });
  const sorted = [...ps].sort((a, b) => a - b);
  return defineMask(
    toeplitzExpr(isCausal, (a) => sorted.map((p) => a.mod(p).eq(0)).reduce((x, y) => x.or(y))),
    {
      name: `prime-stride([${sorted.join(',')}]${isCausal ? ', causal' : ''})`,
      layout: layoutOf(multipleOffsets(sorted), isCausal, (ctx) => {
        for (const p of sorted) checkStride(where, `prime ${p}`, p, ctx);
      }),
    },
  );
}
