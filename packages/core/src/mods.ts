import { SpecError } from './errors.js';
import { Expr, lit, type TensorRef, vars } from './expr/builder.js';
import { compileJs } from './expr/js.js';
import { resolveTensors } from './expr/resolve.js';
import type { AnalyticLayout } from './layout.js';

/** Index variables a mask function receives. */
export interface MaskVars {
  readonly b: Expr;
  readonly h: Expr;
  readonly q: Expr;
  readonly kv: Expr;
}
/** Variables a score function receives: the raw scaled score and the indices. */
export interface ScoreVars extends MaskVars {
  readonly score: Expr;
}

/**
 * Which (q, kv) pairs attend, as a bool expression over b, h (query head), q and kv; optionally
 * with an analytic block layout that must agree with the expression (patterns supply one).
 */
export interface Mask {
  readonly kind: 'mask';
  readonly expr: Expr;
  /** A short description such as `sliding-window(128, causal)`; part of the spec. */
  readonly name: string;
  readonly layout?: AnalyticLayout;
}

/** A modification of each scaled score: `score' = f(score, b, h, q, kv)`. */
export interface ScoreMod {
  readonly kind: 'scoreMod';
  readonly expr: Expr;
  readonly name: string;
}

const maskVars: MaskVars = Object.freeze({ b: vars.b, h: vars.h, q: vars.q, kv: vars.kv });

function readsScore(e: Expr): boolean {
  const stack = [e.node];
  while (stack.length > 0) {
    const n = stack.pop();
    if (!n) break;
    if (n.op === 'var' && n.name === 'score') return true;
    if ('a' in n) stack.push(n.a);
    if ('b' in n) stack.push(n.b);
    if ('cond' in n) stack.push(n.cond);
    if ('index' in n) stack.push(n.index);
    if ('args' in n) stack.push(...n.args);
  }
  return false;
}

/** Builds a mask from a bool expression (the form patterns and combinators use). */
export function defineMask(
  expr: Expr,
  options: { name?: string; layout?: AnalyticLayout } = {},
): Mask {
  if (!(expr instanceof Expr))
    throw new SpecError('mask must be an expression built from the mask variables');
  if (expr.type !== 'bool') throw new SpecError(`mask expression must be bool, got ${expr.type}`);
  if (readsScore(expr))
    throw new SpecError('mask expressions cannot read score (use a score modification)');
  if (options.layout !== undefined && typeof options.layout !== 'function') {
    throw new SpecError('mask layout must be a function (context) => BlockLayout');
  }
  return Object.freeze({
    kind: 'mask',
    expr,
    name: options.name ?? 'custom',
    layout: options.layout,
  });
}

/** `maskMod(({ q, kv }) => q.ge(kv))`: true where the query attends to the key. */
export function maskMod(
  fn: (v: MaskVars) => Expr,
  options: { name?: string; layout?: AnalyticLayout } = {},
): Mask {
  if (typeof fn !== 'function')
    throw new SpecError('maskMod() takes a function ({ b, h, q, kv }) => bool expression');
  return defineMask(fn(maskVars), options);
}

/** `scoreMod(({ score, h, q, kv }) => ...)`: the returned f32 expression replaces the score. */
export function scoreMod(
  fn: (v: ScoreVars) => Expr | number,
  options: { name?: string } = {},
): ScoreMod {
  if (typeof fn !== 'function') {
    throw new SpecError(
      'scoreMod() takes a function ({ score, b, h, q, kv }) => number expression',
    );
  }
  const out = fn(vars);
  if (!(out instanceof Expr) && typeof out !== 'number') {
    throw new SpecError('scoreMod() function must return an expression or a number');
  }
  const expr = out instanceof Expr ? out : lit(out, 'f32');
  if (expr.type === 'bool') throw new SpecError('score modification must be a number, got bool');
  return Object.freeze({ kind: 'scoreMod', expr: expr.toFloat(), name: options.name ?? 'custom' });
}

/** A mask's expression compiled to a JS predicate (b, h, q, kv) => boolean, tensors bound. */
export function compileMask(mask: Mask): (b: number, h: number, q: number, kv: number) => boolean {
  const slots: TensorRef[] = [];
  const node = resolveTensors(mask.expr.node, slots);
  const f = compileJs(
    node,
    slots.map((t) => t.data),
  );
  return (b, h, q, kv) => f(b, h, q, kv, 0) as boolean;
}

export const isMask = (x: unknown): x is Mask =>
  typeof x === 'object' &&
  x !== null &&
  (x as Mask).kind === 'mask' &&
  (x as Mask).expr instanceof Expr &&
  (x as Mask).expr.type === 'bool';
export const isScoreMod = (x: unknown): x is ScoreMod =>
  typeof x === 'object' &&
  x !== null &&
  (x as ScoreMod).kind === 'scoreMod' &&
  (x as ScoreMod).expr instanceof Expr &&
  (x as ScoreMod).expr.type === 'f32';
