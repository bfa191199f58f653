// The CUDA expression renderer against core's JS reference: each expression is rendered to C++,
// compiled for the host with g++ (a few CUDA intrinsics shimmed) and evaluated on a grid of index
// values, including i32 extremes; i32 and bool results must match exactly, f32 ones to 1e-5.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileJs, type Expr, type ExprNode, hash, lit, tensor, vars, where } from '@tessera/core';
import { resolveTensors } from '@tessera/core/backend';
import { describe, expect, it } from 'vitest';
import { exprPrelude, floatLiteral, lowerCuda } from '../src/expr-cuda.js';

const { b, h, q, kv, score } = vars;
const ft = tensor(Float32Array.from([0.5, -1.25, 3, 1e-3, 7.5]));
const it32 = tensor(Int32Array.from([4, -9, 2147483647, -2147483648, 0, 13]));
const INT_MIN = -2147483648;

const cases: Record<string, Expr> = {
  addWrap: q.add(2147483000),
  subWrap: kv.sub(q).sub(2147483000),
  mulWrap: q.mul(kv).mul(65537),
  divTrunc: q.div(kv),
  divByZero: q.div(kv.sub(kv)),
  divMinByMinusOne: lit(INT_MIN).div(q.sub(q).sub(1)),
  modSign: q.mod(kv),
  modByZero: q.mod(0),
  modMinByMinusOne: lit(INT_MIN).mod(kv.sub(kv).sub(1)),
  negAbs: q.neg().add(kv.abs()),
  absMin: lit(INT_MIN).add(q.sub(q)).abs(),
  minMaxInt: q.min(kv).sub(b.max(h)),
  compare: q.ge(kv).and(q.sub(kv).lt(256)).or(q.eq(kv).not()),
  compareAll: q.le(kv).and(q.gt(b)).or(kv.ne(h)),
  floatArith: score.mul(1.5).sub(q.toFloat().mul(0.25)).div(kv.toFloat().abs().add(1)),
  floatFns: score.exp().add(score.exp2()).add(score.abs().add(1).log()).add(score.tanh()),
  sqrtFloor: score.abs().sqrt().add(score.mul(3.7).floor()),
  floatMod: score.mul(7.25).mod(1.5),
  floatMinMax: score.min(0.5).add(score.max(-1)),
  toInt: score.mul(10.7).toInt().add(q),
  select: where(q.gt(kv), score.mul(2), score.neg()),
  selectInt: where(q.lt(0), q.neg(), kv.add(1)),
  loadF: ft.at(q.mod(7)).add(score),
  loadI: it32.at(kv.add(b)).add(1),
  loadOutOfRange: ft.at(q).add(it32.at(kv.neg()).toFloat()),
  hash1: hash(q),
  hash3: hash(7, q, kv),
  hashMask: hash(1234, b, h, q.div(64), kv.div(64)).lt(0.3),
  shared: q.sub(kv).mul(q.sub(kv)).add(q.sub(kv)),
  literals: score
    .add(lit(-0.1))
    .mul(lit(1e-7))
    .add(lit(3.4e38, 'f32').div(lit(1e38, 'f32'))),
};

const I32 = [0, 1, 3, 64, 1000, -7, 2147483647, INT_MIN];
const SCORES = [-2.5, 0, 0.75, 3];
const points: [number, number, number, number, number][] = [];
for (const qq of I32)
  for (const kk of I32)
    for (const [bb, hh] of [
      [0, 0],
      [1, 3],
    ] as const)
      points.push([bb, hh, qq, kk, SCORES[(points.length * 7) % SCORES.length] as number]);

/** Renders every case as a C++ function and a main() that prints its values at each point. */
function hostProgram(
  resolved: Record<string, ExprNode>,
  tensors: (Float32Array | Int32Array)[],
): string {
  const tdecl = tensors
    .map((t, i) =>
      t instanceof Float32Array
        ? `static const float T${i}[] = {${Array.from(t, (x) => floatLiteral(x)).join(', ')}};`
        : `static const int T${i}[] = {${Array.from(t, (x) => (x === INT_MIN ? '(-2147483647 - 1)' : String(x))).join(', ')}};`,
    )
    .join('\n');
  const slots = tensors.map(
    (t) => ({ length: t.length, dtype: t instanceof Float32Array ? 'f32' : 'i32' }) as const,
  );
  const fns = Object.entries(resolved).map(([name, node]) => {
    const low = lowerCuda(node, slots, {
      names: { vars: { b: 'b', h: 'h', q: 'q', kv: 'kv', score: 'score' }, tensor: (i) => `T${i}` },
    });
    const ret = node.type === 'f32' ? 'double' : 'long long';
    return `${ret} f_${name}(int b, int h, int q, int kv, float score) {
  (void)b; (void)h; (void)q; (void)kv; (void)score;
${low.statements.map((s) => `  ${s}`).join('\n')}
  return (${ret})(${low.result});
}`;
  });
  const pts = points.map(
    (p) =>
      `{${p
        .slice(0, 4)
        .map((x) => (x === INT_MIN ? '(-2147483647 - 1)' : String(x)))
        .join(', ')}, ${floatLiteral(p[4])}}`,
  );
  const prints = Object.entries(resolved).map(
    ([name, node]) =>
      `printf(${node.type === 'f32' ? '"%.9g\\n"' : '"%lld\\n"'}, f_${name}(P[i].b, P[i].h, P[i].q, P[i].kv, P[i].s));`,
  );
  return `#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#define __device__
#define __forceinline__ inline
static inline float __int_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline float __uint_as_float(unsigned x) { return __int_as_float(x); }
static inline int __float2int_rz(float x) { return (int)x; }
using std::min; using std::max;
${exprPrelude()}
${tdecl}
${fns.join('\n')}
struct Pt { int b, h, q, kv; float s; };
static const Pt P[] = {${pts.join(',\n')}};
int main() {
  for (unsigned i = 0; i < sizeof(P) / sizeof(P[0]); ++i) {
    ${prints.join('\n    ')}
  }
}
`;
}

describe('CUDA expression renderer', () => {
  it('agrees with the JS reference on every node kind, including i32 edge cases and the hash', () => {
    const tensors = [ft.data, it32.data];
    const resolved: Record<string, ExprNode> = {};
    for (const [name, e] of Object.entries(cases))
      resolved[name] = resolveTensors(e.node, [ft, it32]);

    const dir = mkdtempSync(join(tmpdir(), 'tessera-expr-'));
    try {
      writeFileSync(join(dir, 'x.cc'), hostProgram(resolved, tensors));
      execFileSync('g++', ['-std=c++17', '-O1', '-o', join(dir, 'x'), join(dir, 'x.cc')], {
        stdio: 'pipe',
      });
      const lines = execFileSync(join(dir, 'x'), { encoding: 'utf8' }).trim().split('\n');
      const names = Object.keys(resolved);
      expect(lines.length).toBe(points.length * names.length);
      let k = 0;
      for (const p of points) {
        for (const name of names) {
          const node = resolved[name] as ExprNode;
          const js = compileJs(node, tensors)(...p);
          const got = Number(lines[k++]);
          const want = typeof js === 'boolean' ? Number(js) : js;
          if (node.type === 'f32') {
            expect(Math.abs(got - want), `${name} at ${p}: ${got} vs ${want}`).toBeLessThanOrEqual(
              1e-5 * Math.max(1, Math.abs(want)),
            );
          } else {
            expect(got, `${name} at ${p}`).toBe(want);
          }
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('renders f32 literals that round-trip exactly and i32 INT_MIN without overflow', () => {
    expect(floatLiteral(1)).toBe('1.0f');
    expect(floatLiteral(-0.1)).toBe(`(${Math.fround(-0.1)}f)`);
    expect(floatLiteral(Number.NEGATIVE_INFINITY)).toBe('__int_as_float(0xff800000)');
    const low = lowerCuda(resolveTensors(lit(INT_MIN).add(q).node, []), []);
    expect(low.statements.join('\n')).toContain('(-2147483647 - 1)');
  });
});
