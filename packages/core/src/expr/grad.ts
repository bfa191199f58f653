import { SpecError } from '../errors.js';
import { canonicalJson as canonical } from '../spec.js';
import { children, type ExprNode } from './nodes.js';

/**
 * Reverse-mode differentiation of a score modification `s' = f(score, b, h, q, kv, T…)`.
 *
 * The result is itself expressions over the same variables, so every backend renders it with the
 * renderer it already has for the forward expression:
 * - `dScore` is ∂s'/∂score;
 * - each entry of `tensors` says "element `index` of captured f32 tensor `slot` receives
 *   dS' · `weight`", where dS' is the gradient of the loss with respect to s' at that (q, kv).
 *   A tensor read at several different indices gives several entries; reads at structurally equal
 *   indices are merged into one entry whose weight is the sum.
 *
 * Subgradients, chosen where the function is not differentiable (and the same on every backend):
 * - `where(c, a, b)`: the gradient flows to the branch taken; the condition gets none.
 * - `min(a, b)` / `max(a, b)`: to `a` when it is chosen, ties included (`a <= b` for min,
 *   `a >= b` for max), else to `b`.
 * - `abs(x)`: sign(x), with 0 at x = 0.
 * - `floor(x)`: 0 everywhere (also at the integers).
 * - `mod(a, b)` for f32 (a − b·trunc(a/b)): 1 for `a`, −trunc(a/b) for `b`.
 * - `sqrt(x)` at 0 and `log(x)` at 0 are infinite, as their derivatives are.
 * Integer and boolean sub-expressions (indices, comparisons, casts, `hash`) carry no gradient, and
 * masks have none. i32 captured tensors receive none.
 *
 * Gradients are only meaningful where s' is finite: backends skip elements whose modified score is
 * -Infinity (masked by the score modification), whose probability is exactly zero.
 */
export interface ScoreModGradient {
  /** ∂s'/∂score, an f32 expression. */
  readonly dScore: ExprNode;
  /** Captured-tensor gradient contributions, in first-read order. */
  readonly tensors: readonly TensorGradientTerm[];
}

export interface TensorGradientTerm {
  /** Slot in the spec's `tensors` table (an f32 tensor). */
  readonly slot: number;
  /** The element read: an i32 expression over b, h, q, kv (and score, rarely). */
  readonly index: ExprNode;
  /** ∂s'/∂T[slot][index], an f32 expression. */
  readonly weight: ExprNode;
}

// ---------------------------------------------------------------- node constructors, folded
const f32 = (value: number): ExprNode =>
  Object.freeze({ op: 'const', type: 'f32', value: Math.fround(value) });
const ZERO = f32(0);
const ONE = f32(1);
const isConst = (n: ExprNode, v: number): boolean =>
  n.op === 'const' && n.type === 'f32' && n.value === v;

function bin(fn: 'add' | 'sub' | 'mul' | 'div', a: ExprNode, b: ExprNode): ExprNode {
  if (fn === 'add') {
    if (isConst(a, 0)) return b;
    if (isConst(b, 0)) return a;
  } else if (fn === 'sub') {
    if (isConst(b, 0)) return a;
    if (isConst(a, 0)) return neg(b);
  } else if (fn === 'mul') {
    if (isConst(a, 0) || isConst(b, 0)) return ZERO;
    if (isConst(a, 1)) return b;
    if (isConst(b, 1)) return a;
  } else if (isConst(b, 1)) return a;
  return Object.freeze({ op: 'binary', type: 'f32', fn, a, b });
}
const neg = (a: ExprNode): ExprNode =>
  isConst(a, 0)
    ? ZERO
    : a.op === 'unary' && a.fn === 'neg'
      ? a.a
      : Object.freeze({ op: 'unary', type: 'f32', fn: 'neg', a });
const cmp = (fn: 'lt' | 'le' | 'gt' | 'ge', a: ExprNode, b: ExprNode): ExprNode =>
  Object.freeze({ op: 'binary', type: 'bool', fn, a, b });
const pick = (cond: ExprNode, a: ExprNode, b: ExprNode): ExprNode =>
  isConst(a, 0) && isConst(b, 0) ? ZERO : Object.freeze({ op: 'select', type: 'f32', cond, a, b });
const unaryF = (fn: 'floor' | 'exp2', a: ExprNode): ExprNode =>
  Object.freeze({ op: 'unary', type: 'f32', fn, a });

/** trunc(x) = x < 0 ? -floor(-x) : floor(x), from nodes every backend has. */
const trunc = (x: ExprNode): ExprNode =>
  pick(cmp('lt', x, ZERO), neg(unaryF('floor', neg(x))), unaryF('floor', x));

/** Adjoint contributions of `node` given its adjoint `g`: [child, contribution] pairs. */
function localGradients(node: ExprNode, g: ExprNode): [ExprNode, ExprNode][] {
  switch (node.op) {
    case 'const':
    case 'var':
    case 'hash':
    case 'load':
      return [];
    case 'cast':
      return []; // i32 <-> f32 casts: the integer side carries no gradient
    case 'select':
      return [
        [node.a, pick(node.cond, g, ZERO)],
        [node.b, pick(node.cond, ZERO, g)],
      ];
    case 'unary': {
      const x = node.a;
      switch (node.fn) {
        case 'neg':
          return [[x, neg(g)]];
        case 'abs':
          return [[x, pick(cmp('gt', x, ZERO), g, pick(cmp('lt', x, ZERO), neg(g), ZERO))]];
        case 'exp':
          return [[x, bin('mul', g, node)]];
        case 'exp2':
          return [[x, bin('mul', g, bin('mul', node, f32(Math.LN2)))]];
        case 'log':
          return [[x, bin('div', g, x)]];
        case 'tanh':
          return [[x, bin('mul', g, bin('sub', ONE, bin('mul', node, node)))]];
        case 'sqrt':
          return [[x, bin('div', g, bin('mul', f32(2), node))]];
        case 'floor':
        case 'not':
          return [];
      }
      break;
    }
    case 'binary': {
      const { a, b } = node;
      switch (node.fn) {
        case 'add':
          return [
            [a, g],
            [b, g],
          ];
        case 'sub':
          return [
            [a, g],
            [b, neg(g)],
          ];
        case 'mul':
          return [
            [a, bin('mul', g, b)],
            [b, bin('mul', g, a)],
          ];
        case 'div':
          return [
            [a, bin('div', g, b)],
            [b, neg(bin('div', bin('mul', g, node), b))],
          ];
        case 'mod':
          return [
            [a, g],
            [b, neg(bin('mul', g, trunc(bin('div', a, b))))],
          ];
        case 'min':
          return [
            [a, pick(cmp('le', a, b), g, ZERO)],
            [b, pick(cmp('le', a, b), ZERO, g)],
          ];
        case 'max':
          return [
            [a, pick(cmp('ge', a, b), g, ZERO)],
            [b, pick(cmp('ge', a, b), ZERO, g)],
          ];
        default:
          return []; // comparisons and logic: bool results
      }
    }
  }
  return [];
}

/**
 * Differentiates a (normalised) score-modification expression. `tensorTypes[slot]` is the dtype
 * of each captured tensor; only f32 tensors receive gradients.
 */
export function scoreModGradient(
  expr: ExprNode,
  tensorTypes: readonly ('f32' | 'i32')[] = [],
): ScoreModGradient {
  if (expr.type !== 'f32')
    throw new SpecError(`a score modification to differentiate must be f32 (got ${expr.type})`);
  // Topological order (children before parents) by node identity.
  const order: ExprNode[] = [];
  const seen = new Set<ExprNode>();
  const visit = (n: ExprNode): void => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const c of children(n)) visit(c);
    order.push(n);
  };
  visit(expr);

  const adjoint = new Map<ExprNode, ExprNode>([[expr, ONE]]);
  let dScore: ExprNode = ZERO;
  const terms: { slot: number; index: ExprNode; weight: ExprNode; key: string }[] = [];
  for (let i = order.length - 1; i >= 0; i--) {
    const node = order[i] as ExprNode;
    const g = adjoint.get(node);
    if (g === undefined || isConst(g, 0) || node.type !== 'f32') continue;
    if (node.op === 'var' && node.name === 'score') {
      dScore = bin('add', dScore, g);
      continue;
    }
    if (node.op === 'load') {
      if (tensorTypes[node.tensor] === 'i32') continue;
      const key = `${node.tensor}:${canonical(node.index)}`;
      const hit = terms.find((t) => t.key === key);
      if (hit) hit.weight = bin('add', hit.weight, g);
      else terms.push({ slot: node.tensor, index: node.index, weight: g, key });
      continue;
    }
    for (const [child, contribution] of localGradients(node, g)) {
      if (child.type !== 'f32' || isConst(contribution, 0)) continue;
      const prev = adjoint.get(child);
      adjoint.set(child, prev === undefined ? contribution : bin('add', prev, contribution));
    }
  }
  // Terms were found from the root down; report them in the order the expression reads them.
  const firstRead = new Map<string, number>();
  order.forEach((n, i) => {
    if (n.op === 'load') {
      const key = `${n.tensor}:${canonical(n.index)}`;
      if (!firstRead.has(key)) firstRead.set(key, i);
    }
  });
  terms.sort((x, y) => (firstRead.get(x.key) ?? 0) - (firstRead.get(y.key) ?? 0));
  return Object.freeze({
    dScore,
    tensors: Object.freeze(
      terms.map((t) => Object.freeze({ slot: t.slot, index: t.index, weight: t.weight })),
    ),
  });
}

/** Slots of the f32 tensors a score modification's gradient reaches (sorted, unique). */
export function gradientSlots(grad: ScoreModGradient): number[] {
  return [...new Set(grad.tensors.map((t) => t.slot))].sort((a, b) => a - b);
}
