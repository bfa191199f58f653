import { HASH_ARG_OFFSET, HASH_FLOAT_SCALE, mix32 } from './hash32.js';
import { type ExprRenderer, lowerExpr, type RenderedOperand } from './lower.js';
import type { BinaryFn, ExprNode, ScalarType, UnaryFn, VarName } from './nodes.js';

/** JS target. i32 arithmetic wraps like the GPUs'; f32 arithmetic runs in f64 (the reference is at least as exact). */
export const jsRenderer: ExprRenderer = {
  literal(value: number, type: ScalarType): string {
    if (type === 'bool') return value ? 'true' : 'false';
    const s = String(value);
    return value < 0 || Object.is(value, -0) ? `(${s})` : s;
  },
  variable(name: VarName): string {
    return name;
  },
  unary(fn: UnaryFn, a: RenderedOperand, type: ScalarType): string {
    const x = a.code;
    const int = type === 'i32';
    switch (fn) {
      case 'neg':
        return int ? `(-${x} | 0)` : `-${x}`;
      case 'abs':
        return int ? `(Math.abs(${x}) | 0)` : `Math.abs(${x})`;
      case 'exp':
        return `Math.exp(${x})`;
      case 'exp2':
        return `Math.pow(2, ${x})`;
      case 'log':
        return `Math.log(${x})`;
      case 'tanh':
        return `Math.tanh(${x})`;
      case 'sqrt':
        return `Math.sqrt(${x})`;
      case 'floor':
        return `Math.floor(${x})`;
      case 'not':
        return `!${x}`;
    }
  },
  binary(fn: BinaryFn, a: RenderedOperand, b: RenderedOperand, type: ScalarType): string {
    const [x, y] = [a.code, b.code];
    const int = type === 'i32';
    switch (fn) {
      case 'add':
        return int ? `(${x} + ${y}) | 0` : `${x} + ${y}`;
      case 'sub':
        return int ? `(${x} - ${y}) | 0` : `${x} - ${y}`;
      case 'mul':
        return int ? `Math.imul(${x}, ${y})` : `${x} * ${y}`;
      case 'div':
        return int ? `${y} === 0 ? 0 : (${x} / ${y}) | 0` : `${x} / ${y}`;
      case 'mod':
        return int ? `${y} === 0 ? 0 : (${x} % ${y}) | 0` : `${x} % ${y}`;
      case 'min':
        return `Math.min(${x}, ${y})`;
      case 'max':
        return `Math.max(${x}, ${y})`;
      case 'lt':
        return `${x} < ${y}`;
      case 'le':
        return `${x} <= ${y}`;
      case 'gt':
        return `${x} > ${y}`;
      case 'ge':
        return `${x} >= ${y}`;
      case 'eq':
        return `${x} === ${y}`;
      case 'ne':
        return `${x} !== ${y}`;
      case 'and':
        return `${x} && ${y}`;
      case 'or':
        return `${x} || ${y}`;
    }
  },
  select(cond, a, b): string {
    return `${cond.code} ? ${a.code} : ${b.code}`;
  },
  cast(a, to): string {
    return to === 'i32' ? `${a.code} | 0` : a.code;
  },
  load(slot, _type, index): string {
    const i = index.code;
    return `${i} >= 0 && ${i} < T${slot}.length ? T${slot}[${i}] : 0`;
  },
  hash(args): string {
    let h = '0';
    for (const a of args) h = `mix32(${h} ^ mix32((${a.code} + ${HASH_ARG_OFFSET}) >>> 0))`;
    return `(${h} >>> 8) * ${HASH_FLOAT_SCALE}`;
  },
  declare(name, _type, value): string {
    return `const ${name} = ${value};`;
  },
};

/** An expression compiled to a JS closure over (b, h, q, kv, score). */
export type CompiledExpr = (
  b: number,
  h: number,
  q: number,
  kv: number,
  score: number,
) => number | boolean;

/** The JS source of an expression as a function over (b, h, q, kv, score); deterministic. */
export function emitJs(node: ExprNode, name = 'expr'): string {
  const low = lowerExpr(node, jsRenderer);
  const body = [...low.statements, `return ${low.result};`].map((s) => `  ${s}`).join('\n');
  return `function ${name}(b, h, q, kv, score) {\n${body}\n}`;
}

/** Compiles an expression once into a closure; captured tensors are bound by slot. */
export function compileJs(
  node: ExprNode,
  tensors: readonly (Float32Array | Int32Array)[] = [],
): CompiledExpr {
  const names = tensors.map((_, i) => `T${i}`);
  const factory = new Function('mix32', ...names, `"use strict";\nreturn ${emitJs(node)};`);
  return factory(mix32, ...tensors) as CompiledExpr;
}
