import type { ExprNode, ScalarType, TensorSlot, VarName } from '@tessera/core';
import {
  type ExprRenderer,
  HASH_ARG_OFFSET,
  HASH_FLOAT_SCALE,
  HASH_MUL_1,
  HASH_MUL_2,
  type LoweredExpr,
  lowerExpr,
} from '@tessera/core/backend';

/**
 * CUDA C++ target, node for node beside core's expr/js.ts. i32 arithmetic wraps (done in
 * unsigned, where overflow is defined); i32 div/mod by zero give 0 and INT_MIN / -1 wraps as in
 * JS; f32 arithmetic is IEEE single precision (no fast-math); an out-of-range tensor load gives 0.
 * The hash is the u32 arithmetic of core's hash32.ts, through tsr_mix32 in the kernel prelude.
 */

const C_TYPES: Readonly<Record<ScalarType, string>> = { f32: 'float', i32: 'int', bool: 'bool' };

/** The prelude helpers an expression may call; emitted once per kernel source. */
export function exprPrelude(): string {
  return `__device__ __forceinline__ unsigned tsr_mix32(unsigned h) {
  h ^= h >> 16;
  h *= ${hexU32(HASH_MUL_1)};
  h ^= h >> 15;
  h *= ${hexU32(HASH_MUL_2)};
  h ^= h >> 16;
  return h;
}
__device__ __forceinline__ unsigned tsr_hash_step(unsigned h, int a) {
  return tsr_mix32(h ^ tsr_mix32((unsigned)a + ${hexU32(HASH_ARG_OFFSET)}));
}
__device__ __forceinline__ float tsr_hash_unit(unsigned h) {
  return (float)(h >> 8) * ${floatLiteral(HASH_FLOAT_SCALE)};
}
__device__ __forceinline__ int tsr_idiv(int x, int y) {
  return y == 0 ? 0 : (y == -1 ? (int)(0u - (unsigned)x) : x / y);
}
__device__ __forceinline__ int tsr_imod(int x, int y) {
  return (y == 0 || y == -1) ? 0 : x % y;
}`;
}

function hexU32(x: number): string {
  return `0x${(x >>> 0).toString(16)}u`;
}

/** An f32 literal that parses back to exactly `value` (shortest round-trip digits, then `f`). */
export function floatLiteral(value: number): string {
  const v = Math.fround(value);
  if (v === Number.POSITIVE_INFINITY) return '__int_as_float(0x7f800000)';
  if (v === Number.NEGATIVE_INFINITY) return '__int_as_float(0xff800000)';
  if (Object.is(v, -0)) return '(-0.0f)';
  let s = String(v);
  if (!/[.e]/.test(s)) s += '.0';
  return v < 0 ? `(${s}f)` : `${s}f`;
}

function intLiteral(value: number): string {
  if (value === -2147483648) return '(-2147483647 - 1)';
  return value < 0 ? `(${value})` : String(value);
}

/** Names the expression's index variables and captured tensors take inside generated code. */
export interface CudaExprNames {
  readonly vars: Readonly<Record<VarName, string>>;
  /** Name of the pointer to captured tensor `slot`. */
  tensor(slot: number): string;
}

export const DEFAULT_NAMES: CudaExprNames = {
  vars: { b: 'b', h: 'h', q: 'q', kv: 'kv', score: 'score' },
  tensor: (slot) => `cap.t${slot}`,
};

/** The CUDA renderer for tensors with the given lengths (baked in: they are part of the spec hash). */
export function cudaRenderer(
  tensors: readonly Pick<TensorSlot, 'length' | 'dtype'>[],
  names: CudaExprNames = DEFAULT_NAMES,
): ExprRenderer {
  return {
    literal(value, type) {
      if (type === 'bool') return value ? 'true' : 'false';
      return type === 'i32' ? intLiteral(value) : floatLiteral(value);
    },
    variable(name) {
      return names.vars[name];
    },
    unary(fn, a, type) {
      const x = a.code;
      const int = type === 'i32';
      switch (fn) {
        case 'neg':
          return int ? `(int)(0u - (unsigned)${x})` : `-${x}`;
        case 'abs':
          return int ? `(int)(${x} < 0 ? 0u - (unsigned)${x} : (unsigned)${x})` : `fabsf(${x})`;
        case 'exp':
          return `expf(${x})`;
        case 'exp2':
          return `exp2f(${x})`;
        case 'log':
          return `logf(${x})`;
        case 'tanh':
          return `tanhf(${x})`;
        case 'sqrt':
          return `sqrtf(${x})`;
        case 'floor':
          return `floorf(${x})`;
        case 'not':
          return `!${x}`;
      }
    },
    binary(fn, a, b, type) {
      const [x, y] = [a.code, b.code];
      const int = type === 'i32';
      switch (fn) {
        case 'add':
          return int ? `(int)((unsigned)${x} + (unsigned)${y})` : `${x} + ${y}`;
        case 'sub':
          return int ? `(int)((unsigned)${x} - (unsigned)${y})` : `${x} - ${y}`;
        case 'mul':
          return int ? `(int)((unsigned)${x} * (unsigned)${y})` : `${x} * ${y}`;
        case 'div':
          return int ? `tsr_idiv(${x}, ${y})` : `${x} / ${y}`;
        case 'mod':
          return int ? `tsr_imod(${x}, ${y})` : `fmodf(${x}, ${y})`;
        case 'min':
          return int ? `(${x} < ${y} ? ${x} : ${y})` : `fminf(${x}, ${y})`;
        case 'max':
          return int ? `(${x} > ${y} ? ${x} : ${y})` : `fmaxf(${x}, ${y})`;
        case 'lt':
          return `${x} < ${y}`;
        case 'le':
          return `${x} <= ${y}`;
        case 'gt':
          return `${x} > ${y}`;
        case 'ge':
          return `${x} >= ${y}`;
        case 'eq':
          return `${x} == ${y}`;
        case 'ne':
          return `${x} != ${y}`;
        case 'and':
          return `${x} && ${y}`;
        case 'or':
          return `${x} || ${y}`;
      }
    },
    select(cond, a, b) {
      return `${cond.code} ? ${a.code} : ${b.code}`;
    },
    cast(a, to) {
      if (to === 'i32') return a.type === 'f32' ? `__float2int_rz(${a.code})` : `(int)${a.code}`;
      if (to === 'f32') return `(float)${a.code}`;
      return `(bool)${a.code}`;
    },
    load(slot, type, index) {
      const t = tensors[slot];
      if (!t) throw new Error(`load of tensor slot ${slot}, which the spec does not have`);
      const i = index.code;
      const zero = type === 'f32' ? '0.0f' : '0';
      return `(unsigned)${i} < ${t.length}u ? ${names.tensor(slot)}[${i}] : ${zero}`;
    },
    hash(args) {
      let h = '0u';
      for (const a of args) h = `tsr_hash_step(${h}, ${a.code})`;
      return `tsr_hash_unit(${h})`;
    },
    declare(name, type, value) {
      return `const ${C_TYPES[type]} ${name} = ${value};`;
    },
  };
}

/** Lowers an expression to CUDA statements (see lowerExpr). */
export function lowerCuda(
  node: ExprNode,
  tensors: readonly Pick<TensorSlot, 'length' | 'dtype'>[],
  options: { prefix?: string; names?: CudaExprNames } = {},
): LoweredExpr {
  return lowerExpr(node, cudaRenderer(tensors, options.names), { prefix: options.prefix });
}

/** The C type of an expression type. */
export const cudaType = (t: ScalarType): string => C_TYPES[t];
