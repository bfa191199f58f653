// Reverse-mode score-mod gradients checked against central finite differences in f64, on fixed
// score modifications from the field and on random expressions (fast-check).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  gradientSlots,
  jsRenderer,
  lowerExprs,
  resolveTensors,
  scoreModGradient,
} from '../src/backend-api.js';
import {
  compileJs,
  type Expr,
  type ExprNode,
  type TensorRef,
  tensor,
  vars,
  where,
} from '../src/index.js';

interface Point {
  b: number;
  h: number;
  q: number;
  kv: number;
  score: number;
}

/** Normalises a builder expression the way defineAttention does: tensors become slots. */
function normalise(e: Expr): { node: ExprNode; slots: TensorRef[] } {
  const slots: TensorRef[] = [];
  return { node: resolveTensors(e.node, slots), slots };
}

/** Evaluates in f64: tensors are copied to Float64Array so perturbations are not rounded to f32. */
function evaluator(node: ExprNode, data: readonly Float64Array[]) {
  const f = compileJs(node, data as unknown as Float32Array[]);
  return (p: Point) => Number(f(p.b, p.h, p.q, p.kv, p.score));
}

/**
 * Central difference at step h; undefined near a kink: where steps h and h/4 disagree, or where
 * the one-sided differences on the left and on the right do (|x| at 0 has equal central ones).
 */
function centralDiff(f: (x: number) => number, x: number, h: number): number | undefined {
  const f0 = f(x);
  const d1 = (f(x + h) - f(x - h)) / (2 * h);
  const d2 = (f(x + h / 4) - f(x - h / 4)) / (h / 2);
  const right = (f(x + h / 4) - f0) / (h / 4);
  const left = (f0 - f(x - h / 4)) / (h / 4);
  if (![d1, d2, left, right].every(Number.isFinite)) return undefined;
  const near = (a: number, b: number, tol: number) =>
    Math.abs(a - b) <= tol * Math.max(1, Math.abs(a));
  if (!near(d1, d2, 1e-5) || !near(left, right, 1e-3)) return undefined;
  return d2;
}

/**
 * Checks dScore and every tensor element's gradient at `p` against finite differences (step
 * 1e-4 · max(1, |x|), tolerance 1e-5 relative to max(1, |fd|)). Returns how many checks ran.
 */
function checkAt(e: Expr, p: Point): number {
  const { node, slots } = normalise(e);
  const data = slots.map((t) => Float64Array.from(t.data));
  const grad = scoreModGradient(
    node,
    slots.map((t) => t.dtype),
  );
  let checks = 0;
  const f = evaluator(node, data);
  const dScore = evaluator(grad.dScore, data);
  const fdScore = centralDiff(
    (s) => f({ ...p, score: s }),
    p.score,
    1e-4 * Math.max(1, Math.abs(p.score)),
  );
  if (fdScore !== undefined) {
    expect(Math.abs(dScore(p) - fdScore)).toBeLessThanOrEqual(
      1e-5 * Math.max(1, Math.abs(fdScore)),
    );
    checks++;
  }
  // Gradient of each tensor element: the sum of the weights of the terms that read it here.
  slots.forEach((t, slot) => {
    if (t.dtype !== 'f32') return;
    const got = new Float64Array(t.length);
    for (const term of grad.tensors) {
      if (term.slot !== slot) continue;
      const i = evaluator(term.index, data)(p);
      if (i >= 0 && i < t.length) got[i] += evaluator(term.weight, data)(p);
    }
    for (let j = 0; j < t.length; j++) {
      const x = data[slot] as Float64Array;
      const x0 = x[j] as number;
      const fd = centralDiff(
        (v) => {
          x[j] = v;
          const r = evaluator(node, data)(p);
          x[j] = x0;
          return r;
        },
        x0,
        1e-4 * Math.max(1, Math.abs(x0)),
      );
      if (fd === undefined) continue;
      expect(Math.abs((got[j] as number) - fd)).toBeLessThanOrEqual(
        1e-5 * Math.max(1, Math.abs(fd)),
      );
      checks++;
    }
  });
  return checks;
}

const { score, h, q, kv } = vars;
const points: Point[] = [
  { b: 0, h: 0, q: 5, kv: 2, score: 0.7 },
  { b: 1, h: 3, q: 9, kv: 11, score: -2.3 },
  { b: 0, h: 2, q: 0, kv: 0, score: 4.1 },
];

describe('scoreModGradient on the field’s score modifications', () => {
  const slopes = tensor(Float32Array.from([0.5, 0.25, 0.125, 0.0625]));
  const table = tensor(Float32Array.from({ length: 41 }, (_, i) => Math.sin(i) * 0.3));
  const temps = tensor(Float32Array.from([1.2, 0.8, 1.5, 0.9]));
  const mods: Record<string, Expr> = {
    'alibi (learnable slopes)': score.sub(slopes.at(h).mul(q.sub(kv).abs().toFloat())),
    'relative-position table': score.add(table.at(q.sub(kv).add(20))),
    'softcap 3·tanh(s/3)': score.div(3).tanh().mul(3),
    'per-head temperature': score.mul(temps.at(h)),
    'temperature and table together': score.mul(temps.at(h)).add(table.at(kv.sub(q).add(20))),
    'where / min / max / abs': where(
      q.ge(kv),
      score.min(2).max(-2),
      score.abs().mul(slopes.at(h)).neg(),
    ),
    'exp2, log, sqrt': score
      .mul(0.3)
      .exp2()
      .add(score.mul(score).add(1).log())
      .add(score.mul(score).add(2).sqrt()),
    'f32 mod and floor': score.mod(1.7).add(score.floor().mul(0.5)),
    'f32 mod by a learnable divisor': score.mul(3).mod(temps.at(h).add(0.3)),
    'the same tensor read twice at one index': score.mul(slopes.at(h)).add(slopes.at(h)),
  };
  for (const [name, e] of Object.entries(mods)) {
    it(name, () => {
      let checks = 0;
      for (const p of points) checks += checkAt(e, p);
      expect(checks).toBeGreaterThan(2);
    });
  }

  it('merges reads of one element into one term and keeps distinct indices apart', () => {
    const { node, slots } = normalise(score.mul(slopes.at(h)).add(slopes.at(h)).add(slopes.at(q)));
    const g = scoreModGradient(
      node,
      slots.map((t) => t.dtype),
    );
    expect(g.tensors.map((t) => t.slot)).toEqual([0, 0]);
    expect(gradientSlots(g)).toEqual([0]);
  });

  it('gives no gradient to i32 tensors, to index arithmetic or to a score-free modification', () => {
    const ids = tensor(Int32Array.from([3, 1, 4]));
    const { node, slots } = normalise(score.add(ids.at(q).toFloat()).add(q.toFloat()));
    const g = scoreModGradient(
      node,
      slots.map((t) => t.dtype),
    );
    expect(g.tensors).toEqual([]);
    const dScore = compileJs(g.dScore);
    expect(dScore(0, 0, 1, 2, 0.5)).toBe(1);
    const constant = scoreModGradient(normalise(q.toFloat().mul(0.5)).node);
    expect(compileJs(constant.dScore)(0, 0, 1, 2, 0.5)).toBe(0);
  });

  it('renders with a forward expression, sharing its temporaries', () => {
    const e = score.div(3).tanh().mul(3);
    const { node } = normalise(e);
    const g = scoreModGradient(node);
    const low = lowerExprs([node, g.dScore], jsRenderer);
    // tanh(score / 3) is computed once and read by both the value and the derivative.
    expect(low.statements.filter((s) => s.includes('Math.tanh'))).toHaveLength(1);
    expect(low.results).toHaveLength(2);
  });
});

// Random score modifications over score, the indices, constants and one f32 tensor.
function scoreExpr(depth: number, t: TensorRef): fc.Arbitrary<Expr> {
  const leaf = fc.oneof(
    fc.constant(score),
    fc.constant(score),
    fc.double({ min: -3, max: 3, noNaN: true }).map((c) => score.mul(0).add(c)),
    fc.constantFrom(q, kv, h).map((v) => v.toFloat().mul(0.25)),
    fc.integer({ min: -3, max: 3 }).map((c) => t.at(q.sub(kv).add(c).abs())),
  );
  if (depth <= 0) return leaf;
  const sub = scoreExpr(depth - 1, t);
  const op = fc.constantFrom('add', 'sub', 'mul', 'min', 'max') as fc.Arbitrary<'add'>;
  const cmp = fc.constantFrom('lt', 'le', 'gt', 'ge') as fc.Arbitrary<'lt'>;
  return fc.oneof(
    leaf,
    fc.tuple(sub, sub, op).map(([a, b, o]) => a[o](b)),
    fc.tuple(sub, sub).map(([a, b]) => a.div(b.abs().add(1))),
    fc.tuple(sub, fc.double({ min: 0.5, max: 5, noNaN: true })).map(([a, c]) => a.mod(c)),
    fc.tuple(sub, sub, sub, sub, cmp).map(([a, b, x, y, c]) => where(a[c](b), x, y)),
    sub.map((a) => a.abs()),
    sub.map((a) => a.neg()),
    sub.map((a) => a.floor()),
    sub.map((a) => a.mul(0.2).tanh()),
    sub.map((a) => a.mul(0.1).exp()),
    sub.map((a) => a.mul(0.1).exp2()),
    sub.map((a) => a.abs().add(1).log()),
    sub.map((a) => a.abs().add(1).sqrt()),
  );
}

describe('scoreModGradient on random expressions', () => {
  it('matches central differences wherever the expression is smooth', () => {
    const t = tensor(Float32Array.from({ length: 16 }, (_, i) => Math.cos(i * 1.7)));
    let total = 0;
    fc.assert(
      fc.property(
        scoreExpr(4, t),
        fc.double({ min: -4, max: 4, noNaN: true }),
        fc.integer({ min: 0, max: 12 }),
        fc.integer({ min: 0, max: 12 }),
        fc.integer({ min: 0, max: 3 }),
        (e, s, qi, ki, hi) => {
          total += checkAt(e, { b: 0, h: hi, q: qi, kv: ki, score: s });
        },
      ),
      { numRuns: 300, seed: 1405 },
    );
    // Most samples are smooth at the sampled point; the property did check something.
    expect(total).toBeGreaterThan(300);
  });
});
