// An independent evaluator for the expression IR, written from the documented semantics with
// BigInt integer arithmetic; it shares no code with the emitters under test.
import type { ExprNode } from '../src/index.js';

const I32 = (x: bigint): number => Number(BigInt.asIntN(32, x));
const U32 = (x: bigint): bigint => BigInt.asUintN(32, x);

function mixRef(x: bigint): bigint {
  let h = U32(x);
  h ^= h >> 16n;
  h = U32(h * 0x7feb352dn);
  h ^= h >> 15n;
  h = U32(h * 0x846ca68bn);
  h ^= h >> 16n;
  return h;
}

export function hashRef(args: number[]): number {
  let h = 0n;
  for (const a of args) h = mixRef(h ^ mixRef(BigInt(a) + 0x9e3779b9n));
  return Number(h >> 8n) / 2 ** 24;
}

export interface Env {
  b: number;
  h: number;
  q: number;
  kv: number;
  score: number;
}

export function evalRef(
  n: ExprNode,
  env: Env,
  tensors: readonly ArrayLike<number>[] = [],
): number | boolean {
  const ev = (x: ExprNode) => evalRef(x, env, tensors);
  const num = (x: ExprNode) => ev(x) as number;
  switch (n.op) {
    case 'const':
      return n.type === 'bool' ? n.value !== 0 : n.value;
    case 'var':
      return env[n.name];
    case 'cast':
      return n.type === 'i32' ? I32(BigInt(Math.trunc(num(n.a)))) : num(n.a);
    case 'select':
      return ev(n.cond) ? ev(n.a) : ev(n.b);
    case 'load': {
      const t = tensors[n.tensor] as ArrayLike<number>;
      const i = num(n.index);
      return i >= 0 && i < t.length ? (t[i] as number) : 0;
    }
    case 'hash':
      return hashRef(n.args.map(num));
    case 'unary': {
      if (n.fn === 'not') return !ev(n.a);
      const a = num(n.a);
      if (n.type === 'i32') {
        if (n.fn === 'neg') return I32(-BigInt(a));
        if (n.fn === 'abs') return I32(BigInt(Math.abs(a)));
      }
      const f: Record<string, (x: number) => number> = {
        neg: (x) => -x,
        abs: Math.abs,
        exp: Math.exp,
        exp2: (x) => 2 ** x,
        log: Math.log,
        tanh: Math.tanh,
        sqrt: Math.sqrt,
        floor: Math.floor,
      };
      return (f[n.fn] as (x: number) => number)(a);
    }
    case 'binary': {
      if (n.fn === 'and') return Boolean(ev(n.a)) && Boolean(ev(n.b));
      if (n.fn === 'or') return Boolean(ev(n.a)) || Boolean(ev(n.b));
      const a = ev(n.a);
      const b = ev(n.b);
      switch (n.fn) {
        case 'lt':
          return a < b;
        case 'le':
          return a <= b;
        case 'gt':
          return a > b;
        case 'ge':
          return a >= b;
        case 'eq':
          return a === b;
        case 'ne':
          return a !== b;
      }
      const x = a as number;
      const y = b as number;
      if (n.type === 'i32') {
        const X = BigInt(x);
        const Y = BigInt(y);
        switch (n.fn) {
          case 'add':
            return I32(X + Y);
          case 'sub':
            return I32(X - Y);
          case 'mul':
            return I32(X * Y);
          case 'div':
            return y === 0 ? 0 : I32(X / Y); // BigInt division truncates toward zero
          case 'mod':
            return y === 0 ? 0 : I32(X % Y);
          case 'min':
            return Math.min(x, y);
          case 'max':
            return Math.max(x, y);
        }
      }
      switch (n.fn) {
        case 'add':
          return x + y;
        case 'sub':
          return x - y;
        case 'mul':
          return x * y;
        case 'div':
          return x / y;
        case 'mod':
          return x % y;
        case 'min':
          return Math.min(x, y);
        case 'max':
          return Math.max(x, y);
      }
    }
  }
  throw new Error(`unknown node ${JSON.stringify(n)}`);
}
