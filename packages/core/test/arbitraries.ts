// fast-check generators of random, well-typed expressions over the index variables.
import fc from 'fast-check';
import { type Expr, hash, type TensorRef, tensor, vars, where } from '../src/index.js';

const intLeaf = (): fc.Arbitrary<Expr> =>
  fc.oneof(
    fc.constantFrom(vars.q, vars.kv, vars.h, vars.b),
    fc.integer({ min: -40, max: 40 }).map((c) => vars.q.mul(0).add(c)),
  );

/** Random i32 expressions of bounded depth (no tensors unless given). */
export function intExpr(depth: number, tensors: TensorRef[] = []): fc.Arbitrary<Expr> {
  if (depth <= 0) return intLeaf();
  const sub = intExpr(depth - 1, tensors);
  const options: fc.Arbitrary<Expr>[] = [
    intLeaf(),
    fc
      .tuple(sub, sub, fc.constantFrom('add', 'sub', 'mul', 'min', 'max') as fc.Arbitrary<'add'>)
      .map(([a, b, op]) => a[op](b)),
    fc
      .tuple(
        sub,
        fc.integer({ min: -9, max: 9 }),
        fc.constantFrom('div', 'mod') as fc.Arbitrary<'div'>,
      )
      .map(([a, c, op]) => a[op](c)),
    fc
      .tuple(sub, sub, fc.constantFrom('div', 'mod') as fc.Arbitrary<'div'>)
      .map(([a, b, op]) => a[op](b)),
    sub.map((a) => a.abs()),
    sub.map((a) => a.neg()),
    fc.tuple(boolExpr(depth - 1, tensors), sub, sub).map(([c, a, b]) => where(c, a, b)),
  ];
  for (const t of tensors) {
    if (t.dtype === 'i32') options.push(sub.map((i) => t.at(i)));
  }
  return fc.oneof(...options);
}

/** Random f32 expressions built from int expressions and float ops. */
export function floatExpr(depth: number, tensors: TensorRef[] = []): fc.Arbitrary<Expr> {
  const ints = intExpr(Math.max(depth - 1, 0), tensors);
  const leaf = fc.oneof(
    ints.map((e) => e.toFloat()),
    fc.tuple(ints, ints).map(([a, b]) => hash(7, a, b)),
    fc.double({ min: -50, max: 50, noNaN: true }).map((c) => vars.q.toFloat().mul(0).add(c)),
  );
  if (depth <= 0) return leaf;
  const sub = floatExpr(depth - 1, tensors);
  const options: fc.Arbitrary<Expr>[] = [
    leaf,
    fc
      .tuple(sub, sub, fc.constantFrom('add', 'sub', 'mul', 'min', 'max') as fc.Arbitrary<'add'>)
      .map(([a, b, op]) => a[op](b)),
    fc.tuple(sub, fc.double({ min: 0.5, max: 9, noNaN: true })).map(([a, c]) => a.div(c)),
    fc.tuple(sub, fc.double({ min: 0.5, max: 9, noNaN: true })).map(([a, c]) => a.mod(c)),
    sub.map((a) => a.abs().add(1).log()),
    sub.map((a) => a.mul(0.01).tanh()),
    sub.map((a) => a.abs().sqrt()),
    sub.map((a) => a.floor()),
    sub.map((a) => a.mul(0.01).exp()),
  ];
  for (const t of tensors) {
    if (t.dtype === 'f32') options.push(ints.map((i) => t.at(i)));
  }
  return fc.oneof(...options);
}

/** Random bool expressions: comparisons of int or float expressions, combined with and/or/not. */
export function boolExpr(depth: number, tensors: TensorRef[] = []): fc.Arbitrary<Expr> {
  const cmp = fc.constantFrom('lt', 'le', 'gt', 'ge', 'eq', 'ne') as fc.Arbitrary<'lt'>;
  const ints = intExpr(Math.max(depth - 1, 0), tensors);
  const leaf = fc.oneof(
    fc.tuple(ints, ints, cmp).map(([a, b, op]) => a[op](b)),
    fc
      .tuple(
        floatExpr(Math.max(depth - 2, 0), tensors),
        fc.double({ min: -5, max: 5, noNaN: true }),
        cmp,
      )
      .map(([a, c, op]) => a[op](c)),
  );
  if (depth <= 0) return leaf;
  const sub = boolExpr(depth - 1, tensors);
  return fc.oneof(
    leaf,
    fc.tuple(sub, sub).map(([a, b]) => a.and(b)),
    fc.tuple(sub, sub).map(([a, b]) => a.or(b)),
    sub.map((a) => a.not()),
  );
}

/** Small captured tensors with seeded contents. */
export const smallTensors = fc
  .tuple(
    fc.array(fc.integer({ min: -20, max: 20 }), { minLength: 1, maxLength: 40 }),
    fc.array(fc.float({ min: -10, max: 10, noNaN: true }), { minLength: 1, maxLength: 40 }),
  )
  .map(([ints, floats]) => [tensor(Int32Array.from(ints)), tensor(Float32Array.from(floats))]);
