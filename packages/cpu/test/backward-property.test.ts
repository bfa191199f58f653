import {
  defineAttention,
  type Expr,
  lit,
  scoreMod,
  type TensorRef,
  tensor,
  tensorSlot,
  where,
} from '@tessera/core';
import { causal } from '@tessera/patterns';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dOutFor, exactBackward, fdGradients, pointOf } from './gradcheck.js';
import { inputsFor, seeded } from './util.js';

// Random score modifications as data (printable counterexamples), built into expressions.
type Node =
  | { k: 'score' }
  | { k: 'const'; v: number }
  | { k: 'q' | 'kv'; c: number }
  | { k: 'T'; at: 'h' | 'q' | 'kv' | 'q-kv' | 'score' }
  | { k: 'un'; f: 'tanh' | 'abs' | 'neg' | 'floor' | 'expTanh' | 'square'; a: Node }
  | { k: 'bin'; f: 'add' | 'sub' | 'mul' | 'min' | 'max' | 'where'; a: Node; b: Node }
  | { k: 'mod'; a: Node; c: number };

const small = fc.double({ min: -1.5, max: 1.5, noNaN: true }).map((x) => Math.fround(x));

const nodeArb: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant<Node>({ k: 'score' }),
    small.map<Node>((v) => ({ k: 'const', v })),
    fc.record({ k: fc.constantFrom<'q' | 'kv'>('q', 'kv'), c: small }),
    fc.record({
      k: fc.constant<'T'>('T'),
      at: fc.constantFrom<'h' | 'q' | 'kv' | 'q-kv' | 'score'>('h', 'q', 'kv', 'q-kv', 'score'),
    }),
    fc.record({
      k: fc.constant<'un'>('un'),
      f: fc.constantFrom<'tanh' | 'abs' | 'neg' | 'floor' | 'expTanh' | 'square'>(
        'tanh',
        'abs',
        'neg',
        'floor',
        'expTanh',
        'square',
      ),
      a: tie('node'),
    }),
    fc.record({
      k: fc.constant<'bin'>('bin'),
      f: fc.constantFrom<'add' | 'sub' | 'mul' | 'min' | 'max' | 'where'>(
        'add',
        'sub',
        'mul',
        'min',
        'max',
        'where',
      ),
      a: tie('node'),
      b: tie('node'),
    }),
    fc.record({ k: fc.constant<'mod'>('mod'), a: tie('node'), c: fc.constantFrom(0.7, 1.5) }),
  ),
})).node;

function build(n: Node, v: { score: Expr; h: Expr; q: Expr; kv: Expr }, t: TensorRef): Expr {
  const sub = (x: Node) => build(x, v, t);
  switch (n.k) {
    case 'score':
      return v.score;
    case 'const':
      return lit(n.v, 'f32');
    case 'q':
    case 'kv':
      return v[n.k].toFloat().mul(n.c);
    case 'T': {
      const index = {
        h: v.h,
        q: v.q,
        kv: v.kv,
        'q-kv': v.q.sub(v.kv).add(3),
        score: v.score.mul(3).add(4).toInt(),
      }[n.at];
      return t.at(index);
    }
    case 'un': {
      const a = sub(n.a);
      if (n.f === 'expTanh') return a.tanh().exp();
      if (n.f === 'square') return a.mul(a);
      return a[n.f]();
    }
    case 'bin': {
      const [a, b] = [sub(n.a), sub(n.b)];
      if (n.f === 'where') return where(a.gt(b), a, b.mul(0.5));
      return a[n.f](b);
    }
    case 'mod':
      return sub(n.a).mod(n.c);
  }
}

describe('backward of random score modifications vs finite differences (fast-check)', () => {
  it('dq, dk, dv and the tensor gradient match central FD wherever the loss is smooth', () => {
    let checked = 0;
    let skipped = 0;
    fc.assert(
      fc.property(
        nodeArb,
        fc.boolean(),
        fc.integer({ min: 1, max: 1000 }),
        (node, isCausal, seed) => {
          const table = tensor(seeded(8, seed, 5));
          const spec = defineAttention({
            batch: 1,
            headsQ: 2,
            headsKV: 1,
            seqQ: 4,
            headDim: 2,
            mask: isCausal ? causal() : undefined,
            scoreMod: scoreMod((vars) => build(node, vars, table), { name: 'random' }),
            tiling: { blockQ: 2, blockKV: 2 },
          });
          const inputs = inputsFor(spec, seed);
          const dOut = dOutFor(spec, seed + 1);
          const got = exactBackward(spec, inputs, dOut);
          // FD at h and h/4: where they disagree the step crossed a kink or jump (where, min,
          // max, abs, floor, mod, the float-to-int index) and the element is skipped.
          const h = 1e-3;
          const coarse = fdGradients(spec, pointOf(spec, inputs), dOut, h);
          const fine = fdGradients(spec, pointOf(spec, inputs), dOut, h / 4);
          const slot = tensorSlot(spec, table);
          const pairs: [string, ArrayLike<number> | null, Float64Array, Float64Array][] = [
            ['dq', got.dq, coarse.dq, fine.dq],
            ['dk', got.dk, coarse.dk, fine.dk],
            ['dv', got.dv, coarse.dv, fine.dv],
          ];
          if (slot >= 0) {
            const g = got.grads[slot];
            // The slot gets a gradient array exactly when the expression reads the table.
            pairs.push([
              'T',
              g ?? new Float64Array(8),
              coarse.grads[slot] as Float64Array,
              fine.grads[slot] as Float64Array,
            ]);
          }
          for (const [name, g, c, f] of pairs) {
            const scale = Math.max(1, ...Array.from(f, Math.abs));
            for (let i = 0; i < f.length; i++) {
              if (Math.abs(c[i] - f[i]) > 1e-5 * scale) {
                skipped++;
                continue;
              }
              checked++;
              const e = Math.abs((g as ArrayLike<number>)[i] - f[i]);
              // Truncation of FD at h/4 ≈ 6e-8 · f'''; 1e-5 leaves room for tanh/exp chains.
              if (!(e <= 1e-5 * scale))
                throw new Error(
                  `${name}[${i}] = ${(g as ArrayLike<number>)[i]}, FD ${f[i]} (error ${e})`,
                );
            }
          }
        },
      ),
      { numRuns: 80, seed: 20260414 },
    );
    // Most elements are away from kinks; the check must not be vacuous.
    expect(checked).toBeGreaterThan(10 * skipped);
  });
});
