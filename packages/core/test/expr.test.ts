import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hashUnit } from '../src/backend-api.js';
import {
  compileJs,
  defineAttention,
  emitJs,
  hash,
  lit,
  maskMod,
  SpecError,
  scoreMod,
  tensor,
  vars,
  where,
} from '../src/index.js';
import { boolExpr, floatExpr, intExpr, smallTensors } from './arbitraries.js';
import { evalRef, hashRef } from './reference-eval.js';

const env = fc.record({
  b: fc.integer({ min: 0, max: 3 }),
  h: fc.integer({ min: 0, max: 15 }),
  q: fc.integer({ min: 0, max: 5000 }),
  kv: fc.integer({ min: 0, max: 5000 }),
  score: fc.double({ min: -100, max: 100, noNaN: true }),
});

/** Lowers through defineAttention so tensor slots are assigned as backends see them. */
function normalised(e: ReturnType<typeof vars.q.add>) {
  const spec =
    e.type === 'bool'
      ? defineAttention({ batch: 1, headsQ: 1, seqQ: 8, headDim: 4, mask: maskMod(() => e) })
      : defineAttention({ batch: 1, headsQ: 1, seqQ: 8, headDim: 4, scoreMod: scoreMod(() => e) });
  const node = spec.mask?.expr ?? spec.scoreMod?.expr;
  if (!node) throw new Error('no expression');
  return { node, tensors: spec.tensors.map((t) => t.data) };
}

function same(a: number | boolean, b: number | boolean): boolean {
  if (typeof a === 'boolean' || typeof b === 'boolean') return a === b;
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b);
  if (a === b) return true;
  return Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b));
}

describe('JS lowering agrees with direct evaluation', () => {
  for (const [name, arb] of [
    ['i32', intExpr(4)],
    ['f32', floatExpr(3)],
    ['bool', boolExpr(3)],
  ] as const) {
    it(`random ${name} expressions on random indices`, () => {
      fc.assert(
        fc.property(arb, fc.array(env, { minLength: 1, maxLength: 20 }), (e, envs) => {
          const { node, tensors } = normalised(e);
          const f = compileJs(node, tensors);
          for (const x of envs) {
            const got = f(x.b, x.h, x.q, x.kv, x.score);
            const want = evalRef(node, x, tensors);
            if (!same(got, want))
              throw new Error(`${emitJs(node)}\nat ${JSON.stringify(x)}: ${got} vs ${want}`);
          }
        }),
        { seed: 0x7e55e7a, numRuns: 300 },
      );
    });
  }

  it('random expressions over captured tensors, including out-of-range reads', () => {
    fc.assert(
      fc.property(
        smallTensors.chain((ts) => fc.tuple(fc.constant(ts), boolExpr(3, ts))),
        fc.array(env, { minLength: 1, maxLength: 20 }),
        ([, e], envs) => {
          const { node, tensors } = normalised(e);
          const f = compileJs(node, tensors);
          for (const x of envs)
            expect(f(x.b, x.h, x.q, x.kv, x.score)).toBe(evalRef(node, x, tensors));
        },
      ),
      { seed: 42, numRuns: 200 },
    );
  });
});

describe('integer semantics match 32-bit devices', () => {
  const f = (e: ReturnType<typeof lit>) => compileJs(normalised(e).node);
  it('wraps on overflow', () => {
    expect(f(vars.q.mul(vars.kv))(0, 0, 65536, 65536, 0)).toBe(0);
    expect(f(vars.q.add(2147483647))(0, 0, 1, 0, 0)).toBe(-2147483648);
  });
  it('truncates division toward zero and gives 0 for division by zero', () => {
    expect(f(vars.q.sub(10).div(4))(0, 0, 3, 0, 0)).toBe(-1);
    expect(f(vars.q.div(vars.kv))(0, 0, 7, 0, 0)).toBe(0);
    expect(f(vars.q.mod(vars.kv))(0, 0, 7, 0, 0)).toBe(0);
  });
  it('takes the sign of the dividend for mod', () => {
    expect(f(vars.q.sub(10).mod(4))(0, 0, 3, 0, 0)).toBe(-3);
    expect(f(vars.q.mod(-4))(0, 0, 7, 0, 0)).toBe(3);
  });
});

describe('worked examples', () => {
  it('ALiBi with a captured slope tensor', () => {
    const slopes = tensor(Float32Array.from([0.5, 0.25, 0.125, 0.0625]));
    const alibi = scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv))));
    const { node, tensors } = normalised(alibi.expr);
    const g = compileJs(node, tensors);
    // score 1.5, head 2 (slope 1/8), q=10, kv=2: 1.5 - 8/8 = 0.5
    expect(g(0, 2, 10, 2, 1.5)).toBeCloseTo(0.5, 12);
  });
  it('sliding window mask', () => {
    const w = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(256)));
    const g = compileJs(normalised(w.expr).node);
    expect([
      g(0, 0, 300, 45, 0),
      g(0, 0, 300, 44, 0),
      g(0, 0, 300, 301, 0),
      g(0, 0, 300, 300, 0),
    ]).toEqual([true, false, false, true]);
  });
  it('softcap', () => {
    const cap = scoreMod(({ score }) => score.div(30).tanh().mul(30));
    const g = compileJs(normalised(cap.expr).node);
    expect(g(0, 0, 0, 0, 1000)).toBeCloseTo(30 * Math.tanh(1000 / 30), 5);
  });
  it('a score mod may return a plain number', () => {
    const g = compileJs(normalised(scoreMod(() => 2.5).expr).node);
    expect(g(0, 0, 0, 0, Number.POSITIVE_INFINITY)).toBe(2.5);
  });
});

describe('the counter hash', () => {
  it('matches an independent BigInt implementation', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { minLength: 1, maxLength: 4 }),
        (args) => {
          expect(hashUnit(args)).toBe(hashRef(args));
        },
      ),
      { seed: 1, numRuns: 500 },
    );
  });
  it('is uniform enough for random masks (chi-square over 16 bins)', () => {
    const bins = new Array(16).fill(0);
    const n = 64000;
    for (let i = 0; i < n; i++) bins[Math.floor(hashUnit([12345, i, i * 7]) * 16)]++;
    const expected = n / 16;
    const chi2 = bins.reduce((s, c) => s + (c - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(37.7); // p = 0.001 for 15 degrees of freedom
  });
  it('gives different streams for different seeds', () => {
    const g = compileJs(normalised(hash(1, vars.q, vars.kv).lt(0.5)).node);
    const h2 = compileJs(normalised(hash(2, vars.q, vars.kv).lt(0.5)).node);
    let differ = 0;
    for (let i = 0; i < 1000; i++) if (g(0, 0, i, 3, 0) !== h2(0, 0, i, 3, 0)) differ++;
    expect(differ).toBeGreaterThan(400);
  });
});

describe('type errors are SpecErrors that say what is wrong', () => {
  const cases: [string, () => unknown, RegExp][] = [
    ['arithmetic on bool', () => vars.q.lt(1).add(1), /add needs numbers, got bool and i32/],
    ['and on numbers', () => vars.q.and(vars.kv), /and needs bools, got i32 and i32/],
    ['not on a number', () => vars.q.not(), /not needs a bool, got i32/],
    [
      'float tensor index',
      () => tensor(new Float32Array(4)).at(vars.q.toFloat()),
      /tensor index must be i32, got f32/,
    ],
    [
      'non-bool where condition',
      () => where(vars.q, 1, 2),
      /where\(\) condition must be bool, got i32/,
    ],
    [
      'where branches bool and number',
      () => where(vars.q.lt(1), true, 2),
      /where\(\) branches must have one type/,
    ],
    [
      'mask returning a number',
      () => maskMod(({ q }) => q),
      /mask expression must be bool, got i32/,
    ],
    [
      'mask reading score',
      () => maskMod(() => vars.score.gt(0)),
      /mask expressions cannot read score/,
    ],
    [
      'score mod returning bool',
      () => scoreMod(({ score }) => score.gt(0)),
      /score modification must be a number, got bool/,
    ],
    [
      'hash of a float',
      () => hash(1, vars.q.toFloat()),
      /hash\(\) argument 1 must be i32, got f32/,
    ],
    ['NaN literal', () => vars.q.add(Number.NaN), /expression literal must be a number, got NaN/],
    [
      'i32 literal out of range',
      () => lit(2 ** 40, 'i32'),
      /i32 literal must be an integer in \[-2\^31, 2\^31\), got/,
    ],
    ['empty tensor', () => tensor(new Float32Array(0)), /tensor\(\) needs at least one element/],
    [
      'wrong tensor type',
      () => tensor(new Float64Array(2) as unknown as Float32Array),
      /tensor\(\) takes a Float32Array or an Int32Array/,
    ],
  ];
  for (const [name, fn, message] of cases) {
    it(name, () => {
      expect(fn).toThrow(SpecError);
      expect(fn).toThrow(message);
    });
  }
});

describe('emitted JS source', () => {
  it('is deterministic and readable', () => {
    const w = maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(256)));
    const src = emitJs(normalised(w.expr).node, 'window');
    expect(src).toBe(emitJs(normalised(w.expr).node, 'window'));
    expect(src).toMatchInlineSnapshot(`
      "function window(b, h, q, kv, score) {
        const t0 = q >= kv;
        const t1 = (q - kv) | 0;
        const t2 = t1 < 256;
        const t3 = t0 && t2;
        return t3;
      }"
    `);
  });
  it('shares structurally equal sub-expressions', () => {
    const d = () => vars.q.sub(vars.kv);
    const src = emitJs(normalised(d().mul(d()).lt(d().add(1))).node);
    expect(src.match(/\(q - kv\)/g)).toHaveLength(1);
  });
});
