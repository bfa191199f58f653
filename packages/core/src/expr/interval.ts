import { hashUnit } from './hash32.js';
import type { ExprNode, VarName } from './nodes.js';

/**
 * A closed interval that contains every value a sub-expression can take over a box of index
 * values; `nan` says NaN is possible. Booleans are intervals within [0, 1]. Every rule here is
 * sound: the true value always lies inside, so a block proved all-true or all-false really is.
 */
export interface Interval {
  readonly lo: number;
  readonly hi: number;
  readonly nan: boolean;
}

const I32_MIN = -2147483648;
const I32_MAX = 2147483647;
const TOP: Interval = { lo: Number.NEGATIVE_INFINITY, hi: Number.POSITIVE_INFINITY, nan: true };
const BOOL_UNKNOWN: Interval = { lo: 0, hi: 1, nan: false };
const TRUE: Interval = { lo: 1, hi: 1, nan: false };
const FALSE: Interval = { lo: 0, hi: 0, nan: false };
const HASH_RANGE: Interval = { lo: 0, hi: 1 - 2 ** -24, nan: false };

const iv = (lo: number, hi: number, nan = false): Interval => ({ lo, hi, nan });
const point = (x: number): Interval => ({ lo: x, hi: x, nan: Number.isNaN(x) });

/** Min and max of a captured tensor over any index range, answered in O(range / 64). */
export class RangeMinMax {
  private static readonly CHUNK = 64;
  private readonly data: Float32Array | Int32Array;
  private readonly mins: Float64Array;
  private readonly maxs: Float64Array;
  readonly hasNaN: boolean;
  readonly length: number;
  constructor(data: Float32Array | Int32Array) {
    this.data = data;
    this.length = data.length;
    const n = Math.ceil(data.length / RangeMinMax.CHUNK);
    this.mins = new Float64Array(n).fill(Number.POSITIVE_INFINITY);
    this.maxs = new Float64Array(n).fill(Number.NEGATIVE_INFINITY);
    let nan = false;
    for (let i = 0; i < data.length; i++) {
      const x = data[i] as number;
      if (Number.isNaN(x)) {
        nan = true;
        continue;
      }
      const c = (i / RangeMinMax.CHUNK) | 0;
      if (x < (this.mins[c] as number)) this.mins[c] = x;
      if (x > (this.maxs[c] as number)) this.maxs[c] = x;
    }
    this.hasNaN = nan;
  }
  /** [min, max] over indices lo..hi inclusive (both within bounds). */
  query(lo: number, hi: number): [number, number] {
    const C = RangeMinMax.CHUNK;
    let mn = Number.POSITIVE_INFINITY;
    let mx = Number.NEGATIVE_INFINITY;
    let i = lo;
    while (i <= hi) {
      if (i % C === 0 && i + C - 1 <= hi) {
        const c = i / C;
        mn = Math.min(mn, this.mins[c] as number);
        mx = Math.max(mx, this.maxs[c] as number);
        i += C;
      } else {
        const x = this.data[i] as number;
        if (!Number.isNaN(x)) {
          mn = Math.min(mn, x);
          mx = Math.max(mx, x);
        }
        i++;
      }
    }
    return [mn, mx];
  }
}

export type IntervalEnv = Readonly<Partial<Record<VarName, Interval>>>;

/** Widens a float interval outward so f32 rounding on a device cannot escape it. */
function widenF(lo: number, hi: number, nan: boolean): Interval {
  if (Number.isNaN(lo) || Number.isNaN(hi)) return TOP;
  const d = (x: number) => Math.abs(x) * 2 ** -20 + 1e-30;
  return iv(
    lo === Number.NEGATIVE_INFINITY ? lo : lo - d(lo),
    hi === Number.POSITIVE_INFINITY ? hi : hi + d(hi),
    nan,
  );
}

/** An i32 result: exact while it cannot wrap, the whole i32 range once it might. */
function intResult(lo: number, hi: number): Interval {
  if (lo < I32_MIN || hi > I32_MAX || Number.isNaN(lo) || Number.isNaN(hi))
    return iv(I32_MIN, I32_MAX);
  return iv(lo, hi);
}

function corners(
  f: (x: number, y: number) => number,
  a: Interval,
  b: Interval,
): [number, number, boolean] {
  const vals = [f(a.lo, b.lo), f(a.lo, b.hi), f(a.hi, b.lo), f(a.hi, b.hi)];
  if (vals.some(Number.isNaN)) return [Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, true];
  return [Math.min(...vals), Math.max(...vals), false];
}

const hull = (a: Interval, b: Interval): Interval =>
  iv(Math.min(a.lo, b.lo), Math.max(a.hi, b.hi), a.nan || b.nan);

function truncDivInterval(a: Interval, b: Interval): Interval {
  // Split the divisor at zero: each sign part is monotone, and x / 0 is defined as 0.
  const parts: Interval[] = [];
  if (b.lo <= -1) parts.push(iv(b.lo, Math.min(b.hi, -1)));
  if (b.hi >= 1) parts.push(iv(Math.max(b.lo, 1), b.hi));
  let out: Interval | null = b.lo <= 0 && b.hi >= 0 ? point(0) : null;
  for (const p of parts) {
    const [lo, hi] = corners((x, y) => Math.trunc(x / y), a, p);
    const r = iv(lo, hi);
    out = out ? hull(out, r) : r;
  }
  return out ? intResult(out.lo, out.hi) : point(0);
}

function modInterval(a: Interval, b: Interval, int: boolean): Interval {
  // Truncated remainder: sign of the dividend, |r| < |divisor|.
  const m = Math.max(Math.abs(b.lo), Math.abs(b.hi));
  if (b.lo === b.hi && m > 0 && Number.isFinite(a.lo) && Number.isFinite(a.hi)) {
    const samePeriod =
      (a.lo >= 0 && Math.floor(a.lo / m) === Math.floor(a.hi / m)) ||
      (a.hi <= 0 && Math.floor(-a.hi / m) === Math.floor(-a.lo / m));
    if (samePeriod) return int ? iv(a.lo % m, a.hi % m) : widenF(a.lo % m, a.hi % m, a.nan);
  }
  if (!Number.isFinite(m) || Number.isNaN(m)) return int ? iv(I32_MIN, I32_MAX) : TOP;
  const bound = int ? m - 1 : m;
  const lo = a.lo >= 0 ? 0 : Math.max(a.lo, -bound);
  const hi = a.hi <= 0 ? 0 : Math.min(a.hi, bound);
  const r = iv(
    Math.min(lo, 0),
    Math.max(hi, 0),
    a.nan || b.nan || (!int && b.lo <= 0 && b.hi >= 0),
  );
  return int ? intResult(r.lo, r.hi) : r;
}

function compare(fn: string, a: Interval, b: Interval): Interval {
  if (a.nan || b.nan) return BOOL_UNKNOWN;
  switch (fn) {
    case 'lt':
      return a.hi < b.lo ? TRUE : a.lo >= b.hi ? FALSE : BOOL_UNKNOWN;
    case 'le':
      return a.hi <= b.lo ? TRUE : a.lo > b.hi ? FALSE : BOOL_UNKNOWN;
    case 'gt':
      return compare('lt', b, a);
    case 'ge':
      return compare('le', b, a);
    case 'eq':
      if (a.lo === a.hi && b.lo === b.hi && a.lo === b.lo) return TRUE;
      return a.hi < b.lo || b.hi < a.lo ? FALSE : BOOL_UNKNOWN;
    default: {
      const e = compare('eq', a, b);
      return e === BOOL_UNKNOWN ? e : e.lo === 1 ? FALSE : TRUE;
    }
  }
}

/**
 * Evaluates `node` over a box of variable intervals. `tensors` gives range queries for captured
 * tensors by slot. Unknown variables are unbounded.
 */
export function evalInterval(
  node: ExprNode,
  env: IntervalEnv,
  tensors: readonly RangeMinMax[],
): Interval {
  const memo = new Map<ExprNode, Interval>();
  const ev = (n: ExprNode): Interval => {
    const cached = memo.get(n);
    if (cached) return cached;
    const r = evalNode(n);
    memo.set(n, r);
    return r;
  };
  const evalNode = (n: ExprNode): Interval => {
    switch (n.op) {
      case 'const':
        return point(n.value);
      case 'var':
        return env[n.name] ?? (n.type === 'i32' ? iv(I32_MIN, I32_MAX) : TOP);
      case 'cast': {
        const a = ev(n.a);
        if (n.type === 'f32') return widenF(a.lo, a.hi, a.nan);
        if (a.nan || a.lo < I32_MIN || a.hi > I32_MAX) return iv(I32_MIN, I32_MAX);
        return iv(Math.trunc(a.lo), Math.trunc(a.hi));
      }
      case 'select': {
        const c = ev(n.cond);
        if (c.lo === 1) return ev(n.a);
        if (c.hi === 0) return ev(n.b);
        return hull(ev(n.a), ev(n.b));
      }
      case 'load': {
        const t = tensors[n.tensor];
        const i = ev(n.index);
        if (!t) return TOP;
        const lo = Math.max(i.lo, 0);
        const hi = Math.min(i.hi, t.length - 1);
        const outside = i.lo < 0 || i.hi > t.length - 1;
        if (lo > hi) return point(0);
        const [mn, mx] = t.query(lo, hi);
        const r = iv(outside ? Math.min(mn, 0) : mn, outside ? Math.max(mx, 0) : mx, t.hasNaN);
        return n.type === 'f32' ? r : intResult(r.lo, r.hi);
      }
      case 'hash': {
        const args = n.args.map(ev);
        if (args.every((a) => a.lo === a.hi)) return point(hashUnit(args.map((a) => a.lo)));
        return HASH_RANGE;
      }
      case 'unary': {
        const a = ev(n.a);
        const int = n.type === 'i32';
        switch (n.fn) {
          case 'not':
            return a.lo === a.hi ? point(1 - a.lo) : BOOL_UNKNOWN;
          case 'neg':
            return int ? intResult(-a.hi, -a.lo) : iv(-a.hi, -a.lo, a.nan);
          case 'abs': {
            const r =
              a.lo >= 0
                ? iv(a.lo, a.hi)
                : a.hi <= 0
                  ? iv(-a.hi, -a.lo)
                  : iv(0, Math.max(-a.lo, a.hi));
            return int ? intResult(r.lo, r.hi) : iv(r.lo, r.hi, a.nan);
          }
          case 'floor':
            return iv(Math.floor(a.lo), Math.floor(a.hi), a.nan);
          case 'exp':
            return widenF(Math.exp(a.lo), Math.exp(a.hi), a.nan);
          case 'exp2':
            return widenF(2 ** a.lo, 2 ** a.hi, a.nan);
          case 'tanh':
            return widenF(Math.tanh(a.lo), Math.tanh(a.hi), a.nan);
          case 'sqrt':
            if (a.hi < 0) return TOP;
            return widenF(Math.sqrt(Math.max(a.lo, 0)), Math.sqrt(a.hi), a.nan || a.lo < 0);
          case 'log':
            if (a.hi < 0) return TOP;
            return widenF(
              a.lo <= 0 ? Number.NEGATIVE_INFINITY : Math.log(a.lo),
              Math.log(a.hi),
              a.nan || a.lo < 0,
            );
        }
        return TOP;
      }
      case 'binary': {
        const a = ev(n.a);
        const b = ev(n.b);
        const int = n.type === 'i32';
        switch (n.fn) {
          case 'and':
            if (a.hi === 0 || b.hi === 0) return FALSE;
            return a.lo === 1 && b.lo === 1 ? TRUE : BOOL_UNKNOWN;
          case 'or':
            if (a.lo === 1 || b.lo === 1) return TRUE;
            return a.hi === 0 && b.hi === 0 ? FALSE : BOOL_UNKNOWN;
          case 'lt':
          case 'le':
          case 'gt':
          case 'ge':
          case 'eq':
          case 'ne':
            return compare(n.fn, a, b);
          case 'add':
            return int
              ? intResult(a.lo + b.lo, a.hi + b.hi)
              : widenF(a.lo + b.lo, a.hi + b.hi, a.nan || b.nan);
          case 'sub':
            return int
              ? intResult(a.lo - b.hi, a.hi - b.lo)
              : widenF(a.lo - b.hi, a.hi - b.lo, a.nan || b.nan);
          case 'mul': {
            const [lo, hi, nan] = corners((x, y) => x * y, a, b);
            return int ? intResult(lo, hi) : widenF(lo, hi, nan || a.nan || b.nan);
          }
          case 'div': {
            if (int) return truncDivInterval(a, b);
            if (b.lo <= 0 && b.hi >= 0) return TOP;
            const [lo, hi, nan] = corners((x, y) => x / y, a, b);
            return widenF(lo, hi, nan || a.nan || b.nan);
          }
          case 'mod':
            return modInterval(a, b, int);
          case 'min':
            return iv(Math.min(a.lo, b.lo), Math.min(a.hi, b.hi), a.nan || b.nan);
          case 'max':
            return iv(Math.max(a.lo, b.lo), Math.max(a.hi, b.hi), a.nan || b.nan);
        }
      }
    }
    return TOP;
  };
  return ev(node);
}
