import {
  type AttentionSpec,
  defineAttention,
  defineProgram,
  maskMod,
  runProgram,
  SpecError,
} from '@tessera/core';
import { linearInputScales, randomFeatureMatrix } from '@tessera/core/backend';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { seeded } from './util.js';

// Expectations are brute force over explicit key sets: the grouping is recomputed here with a
// plain sort, and attention is summed key by key, independently of the backend's loops.

const H = 4;
const HK = 2;
const N = 45; // ragged against the group sizes used
const D = 8;
const C = 5;
const at = (x: Float32Array, h: number, n: number) =>
  x.subarray((h * N + n) * D, (h * N + n + 1) * D);
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let d = 0; d < a.length; d++) s += (a[d] as number) * (b[d] as number);
  return s;
};

const q = seeded(H * N * D, 21, 0, 2);
const k = seeded(HK * N * D, 21, 1, 2);
const v = seeded(HK * N * D, 21, 2);

/** Centroids per head; centroid 4 repeats centroid 0, so ties send its rows to 0 and it stays empty. */
function centroids(heads: number, seed: number): Float32Array {
  const c = seeded(heads * C * D, seed, 3);
  for (let h = 0; h < heads; h++) c.copyWithin((h * C + 4) * D, (h * C + 0) * D, (h * C + 1) * D);
  return c;
}
const cq = centroids(H, 22);
const ck = centroids(HK, 23);

/** Group number of every row of every head: clusters by argmax, then rows sorted by (cluster, row). */
function groupsOf(x: Float32Array, c: Float32Array, heads: number, size: number): number[][] {
  return Array.from({ length: heads }, (_, h) => {
    const cl = Array.from({ length: N }, (_, t) => {
      const s = Array.from({ length: C }, (_, ci) =>
        dot(at(x, h, t), c.subarray((h * C + ci) * D, (h * C + ci + 1) * D)),
      );
      return s.indexOf(Math.max(...s));
    });
    expect(cl.includes(4)).toBe(false); // the duplicate centroid loses every tie
    const order = [...cl.keys()].sort((a, b) => (cl[a] as number) - (cl[b] as number) || a - b);
    const group = new Array<number>(N);
    order.forEach((t, r) => {
      group[t] = Math.floor(r / size);
    });
    return group;
  });
}

function spec(causal: boolean, kernel?: AttentionSpec['kernel']): AttentionSpec {
  return defineAttention({
    batch: 1,
    headsQ: H,
    headsKV: HK,
    seqQ: N,
    seqKV: N,
    headDim: D,
    ...(causal ? { mask: maskMod(({ q, kv }) => kv.le(q), { name: 'causal' }) } : {}),
    ...(kernel ? { kernel } : {}),
  });
}

const shapes = { q: [1, H, N, D], k: [1, HK, N, D], v: [1, HK, N, D] } as const;
const F = 32;
const favor = { type: 'linear', featureMap: 'favor+', features: F, seed: 5 } as const;

/** φ(x) of favor+ as core's features.ts defines it (no stabiliser). */
function favorOf(x: ArrayLike<number>, mul: number): number[] {
  const w = randomFeatureMatrix({ featureMap: 'favor+', features: F, seed: 5 }, D);
  let sq = 0;
  for (let d = 0; d < D; d++) sq += (mul * (x[d] as number)) ** 2;
  return Array.from({ length: F }, (_, r) => {
    let p = 0;
    for (let d = 0; d < D; d++) p += (w[r * D + d] as number) * mul * (x[d] as number);
    return Math.exp(p - sq / 2) / Math.sqrt(F);
  });
}

/** Weighted average of v over keys with weights w: { out, lse = ln Σ w } (empty → 0, -∞). */
function average(h: number, keys: number[], weight: (j: number) => number) {
  const hk = Math.floor(h / (H / HK));
  const w = keys.map(weight);
  const z = w.reduce((a, b) => a + b, 0);
  const out = new Array<number>(D).fill(0);
  if (keys.length === 0 || !(z > 0)) return { out, lse: Number.NEGATIVE_INFINITY };
  keys.forEach((j, n) => {
    const vj = at(v, hk, j);
    for (let d = 0; d < D; d++)
      out[d] = (out[d] as number) + ((w[n] as number) * (vj[d] as number)) / z;
  });
  return { out, lse: Math.log(z) };
}

/** Softmax attention of query (h, i) over the keys j of its KV head hk that `sees` keeps. */
function softmaxOver(
  h: number,
  i: number,
  scale: number,
  sees: (hk: number, j: number) => boolean,
) {
  const hk = Math.floor(h / (H / HK));
  const keys = [...Array(N).keys()].filter((j) => sees(hk, j));
  const s = keys.map((j) => scale * dot(at(q, h, i), at(k, hk, j)));
  const m = Math.max(...s);
  const r = average(h, keys, (j) => Math.exp((s[keys.indexOf(j)] as number) - m));
  return { out: r.out, lse: r.lse + m };
}

function expectRows(
  o: Float32Array,
  l: Float32Array,
  want: (h: number, i: number) => { out: number[]; lse: number },
  tol: { out: number; lse: number },
): number {
  let empty = 0;
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < N; i++) {
      const w = want(h, i);
      const r = h * N + i;
      if (w.lse === Number.NEGATIVE_INFINITY) {
        empty++;
        expect(l[r], `row ${h},${i}`).toBe(Number.NEGATIVE_INFINITY);
        expect(Array.from(o.subarray(r * D, r * D + D))).toEqual(new Array(D).fill(0));
        continue;
      }
      expect(Math.abs((l[r] as number) - w.lse), `lse ${h},${i}`).toBeLessThan(tol.lse);
      for (let d = 0; d < D; d++)
        expect(
          Math.abs((o[r * D + d] as number) - (w.out[d] as number)),
          `out ${h},${i}`,
        ).toBeLessThan(tol.out);
    }
  }
  return empty;
}

describe('cpu: group, grouped attend, subtract', () => {
  for (const causal of [true, false]) {
    for (const size of [6, 1, N]) {
      it(`grouped softmax attend sees exactly the query's group (${causal ? 'causal' : 'bidirectional'}, size ${size}, GQA)`, async () => {
        const cpu = await createCpuBackend();
        const sp = spec(causal);
        const p = defineProgram({
          inputs: { ...shapes, cq: [1, H, C, D], ck: [1, HK, C, D] },
          steps: [
            { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size },
            { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size },
            {
              op: 'attend',
              out: 'o',
              lse: 'l',
              spec: sp,
              q: 'q',
              k: 'k',
              v: 'v',
              groupQ: 'gq',
              groupKV: 'gk',
            },
          ],
          outputs: ['o', 'l'],
        });
        const { outputs } = await runProgram(cpu, p, { q, k, v, cq, ck });
        const gq = groupsOf(q, cq, H, size);
        const gk = groupsOf(k, ck, HK, size);
        const empty = expectRows(
          outputs.o as Float32Array,
          outputs.l as Float32Array,
          (h, i) =>
            softmaxOver(
              h,
              i,
              sp.scale,
              (hk, j) => gk[hk]?.[j] === gq[h]?.[i] && (!causal || j <= i),
            ),
          { out: 1e-5, lse: 1e-5 },
        );
        // Queries and keys are grouped separately, so some causal rows meet no key of their group.
        if (causal && size === 6) expect(empty).toBeGreaterThan(0);
        if (size === N) expect(empty).toBe(0);
      });
    }
  }

  for (const causal of [true, false]) {
    it(`one grouping of the keys serves queries too: query heads read their KV head's (${causal ? 'causal' : 'bidirectional'}, GQA)`, async () => {
      const cpu = await createCpuBackend();
      const size = 6;
      const sp = spec(causal);
      const p = defineProgram({
        inputs: { ...shapes, ck: [1, HK, C, D] },
        steps: [
          { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size },
          {
            op: 'attend',
            out: 'o',
            lse: 'l',
            spec: sp,
            q: 'q',
            k: 'k',
            v: 'v',
            groupQ: 'gk',
            groupKV: 'gk',
          },
        ],
        outputs: ['o', 'l'],
      });
      const { outputs } = await runProgram(cpu, p, { q, k, v, ck });
      const gk = groupsOf(k, ck, HK, size);
      const empty = expectRows(
        outputs.o as Float32Array,
        outputs.l as Float32Array,
        (h, i) =>
          softmaxOver(
            h,
            i,
            sp.scale,
            (hk, j) => gk[hk]?.[j] === gk[hk]?.[i] && (!causal || j <= i),
          ),
        { out: 1e-5, lse: 1e-5 },
      );
      expect(empty).toBe(0); // every token's own key is in its group
    });
  }

  it('grouped favor+ attend, whole-minus-part by subtract equals kernel attention outside the group', async () => {
    const cpu = await createCpuBackend();
    const size = 6;
    const lin = spec(true, favor);
    const p = defineProgram({
      inputs: { ...shapes, cq: [1, H, C, D], ck: [1, HK, C, D] },
      steps: [
        { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size },
        { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size },
        { op: 'attend', out: 'w', lse: 'lw', spec: lin, q: 'q', k: 'k', v: 'v' },
        {
          op: 'attend',
          out: 'p',
          lse: 'lp',
          spec: lin,
          q: 'q',
          k: 'k',
          v: 'v',
          groupQ: 'gq',
          groupKV: 'gk',
        },
        {
          op: 'subtract',
          out: 'o',
          lse: 'l',
          whole: { out: 'w', lse: 'lw' },
          part: { out: 'p', lse: 'lp' },
        },
      ],
      outputs: ['o', 'l', 'p', 'lp'],
    });
    const { outputs } = await runProgram(cpu, p, { q, k, v, cq, ck });
    const gq = groupsOf(q, cq, H, size);
    const gk = groupsOf(k, ck, HK, size);
    const { query: a, key: b } = linearInputScales(lin.scale);
    const kernelOver = (h: number, i: number, inGroup: boolean) => {
      const hk = Math.floor(h / (H / HK));
      const pq = favorOf(at(q, h, i), a);
      const keys = [...Array(N).keys()].filter(
        (j) => j <= i && (gk[hk]?.[j] === gq[h]?.[i]) === inGroup,
      );
      return average(h, keys, (j) => dot(pq, favorOf(at(k, hk, j), b)));
    };
    expectRows(
      outputs.p as Float32Array,
      outputs.lp as Float32Array,
      (h, i) => kernelOver(h, i, true),
      {
        out: 1e-5,
        lse: 1e-5,
      },
    );
    // The difference loses the digits the part shares with the whole: f32 inputs, looser bound.
    expectRows(
      outputs.o as Float32Array,
      outputs.l as Float32Array,
      (h, i) => kernelOver(h, i, false),
      { out: 2e-3, lse: 1e-4 },
    );
  });

  it('subtract: t = e^{lp−lw} ≥ 1 and empty wholes give 0 and −∞; an empty part leaves the whole', async () => {
    const cpu = await createCpuBackend();
    const rows = 4;
    const sh = [1, 1, rows, 2] as const;
    const ls = [1, 1, rows, 1] as const;
    const p = defineProgram({
      inputs: { ow: sh, lw: ls, op: sh, lp: ls },
      steps: [
        {
          op: 'subtract',
          out: 'o',
          lse: 'l',
          whole: { out: 'ow', lse: 'lw' },
          part: { out: 'op', lse: 'lp' },
        },
      ],
      outputs: ['o', 'l'],
    });
    const ninf = Number.NEGATIVE_INFINITY;
    // Inputs must be finite, so -∞ rows come from a grouped attend in the test above; here the
    // whole has lse ln 3 with out (1, 2): the part takes ln 1 with out (4, −1), ln 3 (all), ln 5 (more).
    const ow = Float32Array.from([1, 2, 1, 2, 1, 2, 1, 2]);
    const op = Float32Array.from([4, -1, 4, -1, 4, -1, 0, 0]);
    const lw = Float32Array.from([Math.log(3), Math.log(3), Math.log(3), Math.log(3)]);
    const lp = Float32Array.from([0, Math.log(3), Math.log(5), -200]);
    const { outputs } = await runProgram(cpu, p, { ow, lw, op, lp });
    const o = outputs.o as Float32Array;
    const l = outputs.l as Float32Array;
    // Row 0: (3·(1,2) − 1·(4,−1)) / 2 = (−0.5, 3.5), lse ln 2.
    expect(o[0]).toBeCloseTo(-0.5, 5);
    expect(o[1]).toBeCloseTo(3.5, 5);
    expect(l[0]).toBeCloseTo(Math.log(2), 5);
    expect([l[1], l[2]]).toEqual([ninf, ninf]);
    expect(Array.from(o.subarray(2, 6))).toEqual([0, 0, 0, 0]);
    expect(o[6]).toBeCloseTo(1, 6);
    expect(l[3]).toBeCloseTo(Math.log(3), 6);
  });

  it('refuses grouped attends it cannot define, naming the field', () => {
    const base = { ...shapes, cq: [1, H, C, D], ck: [1, HK, C, D] } as const;
    const groups = [
      { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 4 },
      { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: 4 },
    ] as const;
    const attend = {
      op: 'attend',
      out: 'o',
      lse: 'l',
      spec: spec(true),
      q: 'q',
      k: 'k',
      v: 'v',
    } as const;
    const build = (steps: unknown[]) =>
      defineProgram({ inputs: base, steps: steps as never, outputs: ['o'] });
    expect(() => build([...groups, { ...attend, groupQ: 'gq' }])).toThrow(
      /groupQ and groupKV go together/,
    );
    expect(() => build([...groups, { ...attend, groupQ: 'gq', groupKV: 'gq' }])).toThrow(
      /groupKV 'gq' must group \[1, 2, 45\] rows/,
    );
    expect(() => build([...groups, { ...attend, groupQ: 'q', groupKV: 'gk' }])).toThrow(
      /groupQ 'q' is not a group step's output/,
    );
    const windowed = defineAttention({
      batch: 1,
      headsQ: H,
      headsKV: HK,
      seqQ: N,
      seqKV: N,
      headDim: D,
      mask: maskMod(({ q, kv }) => q.sub(kv).lt(8), { name: 'window' }),
    });
    expect(() =>
      build([...groups, { ...attend, spec: windowed, groupQ: 'gq', groupKV: 'gk' }]),
    ).toThrow(/takes no mask or the causal one \(got 'window'\)/);
    const half = defineAttention({
      batch: 1,
      headsQ: H,
      headsKV: HK,
      seqQ: N,
      seqKV: N,
      headDim: D,
      dtype: 'bf16',
    });
    expect(() =>
      build([...groups, { ...attend, spec: half, groupQ: 'gq', groupKV: 'gk' }]),
    ).toThrow(/a grouped attend runs in f32 \(spec has 'bf16'\)/);
    expect(() => build([{ ...groups[0], size: N + 1 }, attend])).toThrow(
      /size 46 exceeds the 45 rows/,
    );
    expect(() => build([{ ...groups[0], centroids: 'ck' }, attend])).toThrow(
      /centroids must have shape \[1, 4, clusters, 8\]/,
    );
    expect(() =>
      defineProgram({
        inputs: { a: [1, 1, 3, 2], la: [1, 1, 3, 1], b: [1, 1, 4, 2], lb: [1, 1, 4, 1] },
        steps: [
          {
            op: 'subtract',
            out: 'o',
            whole: { out: 'a', lse: 'la' },
            part: { out: 'b', lse: 'lb' },
          },
        ],
        outputs: ['o'],
      }),
    ).toThrow(SpecError);
  });
});
