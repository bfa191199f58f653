import { SpecError } from '../errors.js';
import {
  ARITH_FNS,
  type ArithFn,
  type BinaryFn,
  COMPARE_FNS,
  type CompareFn,
  type ExprNode,
  type LogicFn,
  type ScalarType,
  type UnaryFn,
  VAR_TYPES,
  type VarName,
} from './nodes.js';

/** A buffer captured by an expression and read with `.at(index)`. */
export class TensorRef {
  readonly dtype: 'f32' | 'i32';
  readonly data: Float32Array | Int32Array;
  constructor(data: Float32Array | Int32Array) {
    if (data instanceof Float32Array) this.dtype = 'f32';
    else if (data instanceof Int32Array) this.dtype = 'i32';
    else throw new SpecError('tensor() takes a Float32Array or an Int32Array');
    if (data.length === 0) throw new SpecError('tensor() needs at least one element');
    this.data = data;
  }
  get length(): number {
    return this.data.length;
  }
  /** Reads element `index` (an i32 expression). Out-of-range reads give 0 on every backend. */
  at(index: Operand): Expr {
    const idx = toExpr(index, 'i32');
    if (idx.type !== 'i32') throw new SpecError(`tensor index must be i32, got ${idx.type}`);
    return new Expr({ op: 'load', type: this.dtype, tensor: this, index: idx.node });
  }
}

export type BuilderNode = ExprNode<TensorRef>;
export type Operand = Expr | number | boolean;

/** A typed expression; TypeScript has no operator overloading, so operators are methods. */
export class Expr {
  readonly node: BuilderNode;
  constructor(node: BuilderNode) {
    this.node = node;
  }
  get type(): ScalarType {
    return this.node.type;
  }

  add(o: Operand): Expr {
    return arith('add', this, o);
  }
  sub(o: Operand): Expr {
    return arith('sub', this, o);
  }
  mul(o: Operand): Expr {
    return arith('mul', this, o);
  }
  /** Integer division truncates toward zero; integer division by zero gives 0. */
  div(o: Operand): Expr {
    return arith('div', this, o);
  }
  /** Remainder with the sign of the dividend (C, WGSL and JS `%`); integer `x mod 0` gives 0. */
  mod(o: Operand): Expr {
    return arith('mod', this, o);
  }
  min(o: Operand): Expr {
    return arith('min', this, o);
  }
  max(o: Operand): Expr {
    return arith('max', this, o);
  }
  neg(): Expr {
    return unary('neg', this);
  }
  abs(): Expr {
    return unary('abs', this);
  }
  exp(): Expr {
    return unary('exp', this);
  }
  exp2(): Expr {
    return unary('exp2', this);
  }
  log(): Expr {
    return unary('log', this);
  }
  tanh(): Expr {
    return unary('tanh', this);
  }
  sqrt(): Expr {
    return unary('sqrt', this);
  }
  floor(): Expr {
    return unary('floor', this);
  }
  lt(o: Operand): Expr {
    return compare('lt', this, o);
  }
  le(o: Operand): Expr {
    return compare('le', this, o);
  }
  gt(o: Operand): Expr {
    return compare('gt', this, o);
  }
  ge(o: Operand): Expr {
    return compare('ge', this, o);
  }
  eq(o: Operand): Expr {
    return compare('eq', this, o);
  }
  ne(o: Operand): Expr {
    return compare('ne', this, o);
  }
  and(o: Operand): Expr {
    return logic('and', this, o);
  }
  or(o: Operand): Expr {
    return logic('or', this, o);
  }
  not(): Expr {
    return unary('not', this);
  }
  /** f32 → i32 truncating toward zero (out-of-range values are undefined; keep them in range). */
  toInt(): Expr {
    if (this.type === 'bool') throw new SpecError('toInt() needs a number, got bool');
    return this.type === 'i32' ? this : new Expr({ op: 'cast', type: 'i32', a: this.node });
  }
  /** i32 → f32 (exact up to 2^24). */
  toFloat(): Expr {
    if (this.type === 'bool') throw new SpecError('toFloat() needs a number, got bool');
    return promote(this, 'f32');
  }
}

/** A literal. Integers become i32 where the other operand is i32, otherwise f32 (rounded to f32). */
export function lit(value: number | boolean, type?: ScalarType): Expr {
  if (typeof value === 'boolean')
    return new Expr({ op: 'const', type: 'bool', value: value ? 1 : 0 });
  if (typeof value !== 'number' || Number.isNaN(value)) {
    throw new SpecError(`expression literal must be a number, got ${String(value)}`);
  }
  const t = type ?? (Number.isInteger(value) ? 'i32' : 'f32');
  if (t === 'i32') {
    if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647) {
      throw new SpecError(`i32 literal must be an integer in [-2^31, 2^31), got ${value}`);
    }
    return new Expr({ op: 'const', type: 'i32', value });
  }
  if (t === 'bool') return new Expr({ op: 'const', type: 'bool', value: value ? 1 : 0 });
  return new Expr({ op: 'const', type: 'f32', value: Math.fround(value) });
}

function toExpr(o: Operand, hint: ScalarType): Expr {
  if (o instanceof Expr) return o;
  if (typeof o === 'boolean') return lit(o);
  if (typeof o !== 'number')
    throw new SpecError(`expression operand must be an Expr or a number, got ${typeof o}`);
  return lit(o, hint !== 'f32' && Number.isInteger(o) ? 'i32' : 'f32');
}

function promote(e: Expr, to: ScalarType): Expr {
  if (e.type === to) return e;
  if (e.node.op === 'const' && to === 'f32') return lit(e.node.value, 'f32');
  return new Expr({ op: 'cast', type: to, a: e.node });
}

function numericPair(fn: string, a: Expr, bo: Operand): [Expr, Expr, ScalarType] {
  const b = toExpr(bo, a.type);
  if (a.type === 'bool' || b.type === 'bool') {
    throw new SpecError(`${fn} needs numbers, got ${a.type} and ${b.type}`);
  }
  const t: ScalarType = a.type === 'f32' || b.type === 'f32' ? 'f32' : 'i32';
  return [promote(a, t), promote(b, t), t];
}

function arith(fn: ArithFn, a: Expr, bo: Operand): Expr {
  const [x, y, t] = numericPair(fn, a, bo);
  return new Expr({ op: 'binary', type: t, fn, a: x.node, b: y.node });
}

function compare(fn: CompareFn, a: Expr, bo: Operand): Expr {
  const b = toExpr(bo, a.type);
  if ((fn === 'eq' || fn === 'ne') && a.type === 'bool' && b.type === 'bool') {
    return new Expr({ op: 'binary', type: 'bool', fn, a: a.node, b: b.node });
  }
  const [x, y] = numericPair(fn, a, b);
  return new Expr({ op: 'binary', type: 'bool', fn, a: x.node, b: y.node });
}

function logic(fn: LogicFn, a: Expr, bo: Operand): Expr {
  const b = toExpr(bo, 'bool');
  if (a.type !== 'bool' || b.type !== 'bool') {
    throw new SpecError(`${fn} needs bools, got ${a.type} and ${b.type}`);
  }
  return new Expr({ op: 'binary', type: 'bool', fn, a: a.node, b: b.node });
}

const FLOAT_ONLY: ReadonlySet<UnaryFn> = new Set(['exp', 'exp2', 'log', 'tanh', 'sqrt']);

function unary(fn: UnaryFn, a: Expr): Expr {
  if (fn === 'not') {
    if (a.type !== 'bool') throw new SpecError(`not needs a bool, got ${a.type}`);
    return new Expr({ op: 'unary', type: 'bool', fn, a: a.node });
  }
  if (a.type === 'bool') throw new SpecError(`${fn} needs a number, got bool`);
  if (fn === 'floor' && a.type === 'i32') return a;
  const x = FLOAT_ONLY.has(fn) ? promote(a, 'f32') : a;
  return new Expr({ op: 'unary', type: x.type, fn, a: x.node });
}

/** `cond ? a : b`, both branches evaluated (expressions are pure). */
export function where(cond: Operand, a: Operand, b: Operand): Expr {
  const c = toExpr(cond, 'bool');
  if (c.type !== 'bool') throw new SpecError(`where() condition must be bool, got ${c.type}`);
  const ea = a instanceof Expr ? a : b instanceof Expr ? toExpr(a, b.type) : toExpr(a, 'i32');
  const eb = toExpr(b, ea.type);
  if (ea.type === 'bool' || eb.type === 'bool') {
    if (ea.type !== eb.type)
      throw new SpecError(`where() branches must have one type, got ${ea.type} and ${eb.type}`);
    return new Expr({ op: 'select', type: 'bool', cond: c.node, a: ea.node, b: eb.node });
  }
  const t: ScalarType = ea.type === 'f32' || eb.type === 'f32' ? 'f32' : 'i32';
  return new Expr({
    op: 'select',
    type: t,
    cond: c.node,
    a: promote(ea, t).node,
    b: promote(eb, t).node,
  });
}

/**
 * Counter-based hash of integer arguments, uniform in [0, 1) with 24 bits: `hash(seed, q, kv)`.
 * The same arguments give the same value on every backend, so random patterns need no tables.
 */
export function hash(...args: Operand[]): Expr {
  if (args.length === 0) throw new SpecError('hash() needs at least one argument');
  const nodes = args.map((a, i) => {
    const e = toExpr(a, 'i32');
    if (e.type !== 'i32') throw new SpecError(`hash() argument ${i} must be i32, got ${e.type}`);
    return e.node;
  });
  return new Expr({ op: 'hash', type: 'f32', args: nodes });
}

/** Captures a buffer for use inside expressions (per-head slopes, document ids, ...). */
export function tensor(data: Float32Array | Int32Array): TensorRef {
  return new TensorRef(data);
}

function variable(name: VarName): Expr {
  return new Expr({ op: 'var', type: VAR_TYPES[name], name });
}

/** The symbolic index variables handed to mask and score functions. */
export const vars = Object.freeze({
  b: variable('b'),
  h: variable('h'),
  q: variable('q'),
  kv: variable('kv'),
  score: variable('score'),
});

export const isArith = (fn: BinaryFn): fn is ArithFn =>
  (ARITH_FNS as readonly string[]).includes(fn);
export const isCompare = (fn: BinaryFn): fn is CompareFn =>
  (COMPARE_FNS as readonly string[]).includes(fn);
