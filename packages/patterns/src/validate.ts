import { type Expr, lit, SpecError, tensor, vars } from '@tessera/core';

/** Largest index the expression language addresses (i32). */
export const MAX_INDEX = 2147483647;

const show = (v: unknown): string =>
  typeof v === 'number' || typeof v === 'boolean' ? String(v) : (JSON.stringify(v) ?? String(v));

/** A positive integer below 2^31, or a SpecError naming the builder and the parameter. */
export function positiveInt(where: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > MAX_INDEX) {
    throw new SpecError(`${where}: ${name} must be a positive integer (got ${show(v)})`);
  }
  return v;
}

/** A non-negative integer below 2^31. */
export function nonNegativeInt(where: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_INDEX) {
    throw new SpecError(`${where}: ${name} must be a non-negative integer (got ${show(v)})`);
  }
  return v;
}

/** A seed: any integer in the i32 range (it is hashed as an i32 argument). */
export function seedInt(where: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -2147483648 || v > MAX_INDEX) {
    throw new SpecError(`${where}: seed must be an integer in [-2^31, 2^31) (got ${show(v)})`);
  }
  return v;
}

export function bool(where: string, name: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean')
    throw new SpecError(`${where}: ${name} must be a boolean (got ${show(v)})`);
  return v;
}

/** Options objects must be plain objects with known keys only (a typo is an error, not a default). */
export function options<T extends object>(where: string, v: unknown, known: readonly string[]): T {
  if (v === undefined) return {} as T;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new SpecError(`${where}: options must be an object (got ${show(v)})`);
  }
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) {
      throw new SpecError(
        `${where}: unknown option '${k}' (known: ${known.map((x) => `'${x}'`).join(', ')})`,
      );
    }
  }
  return v as T;
}

/** A number or one number per query head. */
export type PerHead = number | readonly number[] | Int32Array;

/**
 * A parameter that is either one value for every head or one value per query head. Per-head
 * values are captured as an i32 tensor indexed by `h`, so the layout gets one slice per head.
 */
export interface HeadParam {
  readonly values: Int32Array;
  readonly perHead: boolean;
  readonly expr: Expr;
  /** The value for query head `h` (0 when the parameter is shared). */
  at(h: number): number;
}

export function headParam(
  where: string,
  name: string,
  v: unknown,
  check: (where: string, name: string, v: unknown) => number,
): HeadParam {
  if (typeof v === 'number') {
    const x = check(where, name, v);
    return { values: Int32Array.of(x), perHead: false, expr: lit(x, 'i32'), at: () => x };
  }
  if (!(Array.isArray(v) || v instanceof Int32Array) || v.length === 0) {
    throw new SpecError(
      `${where}: ${name} must be a number or a non-empty array with one value per query head (got ${show(v)})`,
    );
  }
  const values = Int32Array.from(v as ArrayLike<number>, (x, i) =>
    check(where, `${name}[${i}]`, x),
  );
  return {
    values,
    perHead: true,
    expr: tensor(values).at(vars.h),
    at: (h) => values[h] as number,
  };
}

/** Per-head parameters must agree on the head count; returns it (1 when all are shared). */
export function headCount(where: string, params: readonly HeadParam[]): number {
  let n = 1;
  for (const p of params) {
    if (!p.perHead) continue;
    if (n !== 1 && p.values.length !== n) {
      throw new SpecError(
        `${where}: per-head parameters disagree on the head count (${n} vs ${p.values.length})`,
      );
    }
    n = p.values.length;
  }
  return n;
}

/** Name fragment for a head parameter: `5` or `[1,2,4]`. */
export const showParam = (p: HeadParam): string =>
  p.perHead ? `[${Array.from(p.values).join(',')}]` : String(p.values[0]);
