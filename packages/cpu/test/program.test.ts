import {
  type DeviceValue,
  defineAttention,
  defineProgram,
  InputError,
  linearInputScales,
  maskMod,
  type Program,
  randomFeatureMatrix,
  runProgram,
  SpecError,
} from '@tessera/core';
import { describe, expect, it } from 'vitest';
import { createCpuBackend } from '../src/index.js';
import { seeded } from './util.js';

// Every expectation below is computed here by brute force over explicit key sets, independently
// of the backend's kernels (which walk layouts and keep running maxima).

const B = 1;
const H = 4;
const HK = 2;
const N = 45; // ragged against every block size used
const D = 8;
const idx = (h: number, n: number, cols: number, d: number, rows = N): number =>
  (h * rows + n) * cols + d;

interface Key {
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  bias: number;
}

/** softmax over an explicit key list: { out, lse }. */
function softmaxOver(q: ArrayLike<number>, keys: Key[], scale: number) {
  if (keys.length === 0) return { out: new Array(D).fill(0), lse: Number.NEGATIVE_INFINITY };
  const s = keys.map(({ k, bias }) => {
    let x = 0;
    for (let d = 0; d < D; d++) x += (q[d] as number) * (k[d] as number);
    return x * scale + bias;
  });
  const m = Math.max(...s);
  const w = s.map((x) => Math.exp(x - m));
  const z = w.reduce((a, b) => a + b, 0);
  const out = new Array(D).fill(0);
  keys.forEach(({ v }, j) => {
    for (let d = 0; d < D; d++) out[d] += ((w[j] as number) * (v[d] as number)) / z;
  });
  return { out, lse: m + Math.log(z) };
}

const row = (x: Float32Array, h: number, n: number, rows = N) =>
  x.subarray(idx(h, n, D, 0, rows), idx(h, n, D, 0, rows) + D);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (x === y) continue; // also equal infinities
    m = Math.max(m, Math.abs(x - y));
  }
  return m;
}

const q = seeded(B * H * N * D, 11, 0, 2);
const k = seeded(B * HK * N * D, 11, 1, 2);
const v = seeded(B * HK * N * D, 11, 2);
const shapes = { q: [B, H, N, D], k: [B, HK, N, D], v: [B, HK, N, D] } as const;
const causal = defineAttention({
  batch: 1,
  headsQ: H,
  headsKV: HK,
  seqQ: N,
  seqKV: N,
  headDim: D,
  mask: maskMod(({ q, kv }) => kv.le(q), { name: 'causal' }),
});
const scale = causal.scale;

function pooled(x: Float32Array, heads: number, block: number): Float32Array {
  const nb = Math.ceil(N / block);
  const out = new Float32Array(heads * nb * D);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < nb; j++) {
      const n = Math.min(block, N - j * block);
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let t = 0; t < n; t++) s += x[idx(h, j * block + t, D, d)] as number;
        out[(h * nb + j) * D + d] = s / n;
      }
    }
  }
  return out;
}

describe('cpu programs', () => {
  it('pool: mean and softmax-weighted block summaries, ragged last block', async () => {
    const cpu = await createCpuBackend();
    const w = seeded(HK * 8, 5, 3, 3);
    const p = defineProgram({
      inputs: { k: shapes.k, w: [1, HK, 1, 8] },
      steps: [
        { op: 'pool', out: 'mean', x: 'k', block: 8 },
        { op: 'pool', out: 'weighted', x: 'k', block: 8, weights: 'w' },
      ],
      outputs: ['mean', 'weighted'],
    });
    const { outputs } = await runProgram(cpu, p, { k, w });
    expect(maxAbsDiff(outputs.mean as Float32Array, pooled(k, HK, 8))).toBeLessThan(1e-6);
    const want = new Float32Array(HK * 6 * D);
    for (let h = 0; h < HK; h++) {
      for (let j = 0; j < 6; j++) {
        const n = Math.min(8, N - j * 8);
        const e = Array.from({ length: n }, (_, t) => Math.exp(w[h * 8 + t] as number));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) {
          let s = 0;
          for (let t = 0; t < n; t++)
            s += ((e[t] as number) / z) * (k[idx(h, j * 8 + t, D, d)] as number);
          want[(h * 6 + j) * D + d] = s;
        }
      }
    }
    expect(maxAbsDiff(outputs.weighted as Float32Array, want)).toBeLessThan(1e-6);
  });

  it('project, dense (relu) and gate against direct sums', async () => {
    const cpu = await createCpuBackend();
    const r = 7;
    const E = seeded(r * N, 6, 0);
    const W = seeded(H * D * 5, 6, 1);
    const bias = seeded(H * 5, 6, 2);
    const gw = seeded(2 * H * D, 6, 3);
    const gb = seeded(2 * H, 6, 4);
    const p = defineProgram({
      inputs: { q: shapes.q, k: shapes.k, E: [1, 1, r, N], W: [1, H, D, 5], bias: [1, H, 1, 5] },
      steps: [
        { op: 'project', out: 'kr', x: 'k', matrix: 'E' },
        { op: 'dense', out: 'h', x: 'q', weight: 'W', bias: 'bias', activation: 'relu' },
      ],
      outputs: ['kr', 'h'],
    });
    const { outputs } = await runProgram(cpu, p, { q, k, E, W, bias });
    const kr = outputs.kr as Float32Array;
    for (let h = 0; h < HK; h++) {
      for (let i = 0; i < r; i++) {
        for (let d = 0; d < D; d++) {
          let s = 0;
          for (let n = 0; n < N; n++)
            s += (E[i * N + n] as number) * (k[idx(h, n, D, d)] as number);
          expect(kr[(h * r + i) * D + d]).toBeCloseTo(s, 5);
        }
      }
    }
    const hOut = outputs.h as Float32Array;
    let positives = 0;
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        for (let e = 0; e < 5; e++) {
          let s = bias[h * 5 + e] as number;
          for (let d = 0; d < D; d++)
            s += (q[idx(h, n, D, d)] as number) * (W[(h * D + d) * 5 + e] as number);
          if (s > 0) positives++;
          expect(hOut[(h * N + n) * 5 + e]).toBeCloseTo(Math.max(0, s), 5);
        }
      }
    }
    expect(positives).toBeGreaterThan(0);

    const g = defineProgram({
      inputs: { q: shapes.q, a: shapes.q, b: shapes.q, gw: [1, 2, H, D], gb: [1, 1, 2, H] },
      steps: [{ op: 'gate', out: 'o', x: 'q', weight: 'gw', bias: 'gb', branches: ['a', 'b'] }],
      outputs: ['o'],
    });
    const a = seeded(q.length, 7, 0);
    const b2 = seeded(q.length, 7, 1);
    const go = (await runProgram(cpu, g, { q, a, b: b2, gw, gb })).outputs.o as Float32Array;
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const sig = [0, 1].map((bi) => {
          let s = gb[bi * H + h] as number;
          for (let d = 0; d < D; d++)
            s += (q[idx(h, n, D, d)] as number) * (gw[(bi * H + h) * D + d] as number);
          return 1 / (1 + Math.exp(-s));
        });
        for (let d = 0; d < D; d++) {
          const want =
            (sig[0] as number) * (a[idx(h, n, D, d)] as number) +
            (sig[1] as number) * (b2[idx(h, n, D, d)] as number);
          expect(go[idx(h, n, D, d)]).toBeCloseTo(want, 5);
        }
      }
    }
  });

  it('merging attention over disjoint key halves by log-sum-exp equals attention over all keys', async () => {
    const cpu = await createCpuBackend();
    const half = (name: string, lower: boolean) =>
      defineAttention({
        batch: 1,
        headsQ: H,
        headsKV: HK,
        seqQ: N,
        seqKV: N,
        headDim: D,
        mask: maskMod(({ q, kv }) => (lower ? kv.le(q).and(kv.lt(20)) : kv.le(q).and(kv.ge(20))), {
          name,
        }),
      });
    const p = defineProgram({
      inputs: shapes,
      steps: [
        { op: 'attend', out: 'a', lse: 'la', spec: half('lower', true), q: 'q', k: 'k', v: 'v' },
        { op: 'attend', out: 'b', lse: 'lb', spec: half('upper', false), q: 'q', k: 'k', v: 'v' },
        {
          op: 'merge',
          out: 'o',
          lse: 'l',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 'b', lse: 'lb' },
          ],
        },
      ],
      outputs: ['o', 'l', 'lb'],
    });
    const { outputs } = await runProgram(cpu, p, { q, k, v });
    const o = outputs.o as Float32Array;
    const l = outputs.l as Float32Array;
    // Rows 0..19 see no upper key: that branch is empty there (lse -Infinity), and the merge must not make NaN.
    expect((outputs.lb as Float32Array)[0]).toBe(Number.NEGATIVE_INFINITY);
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / 2);
      for (let i = 0; i < N; i++) {
        const keys = Array.from({ length: i + 1 }, (_, j) => ({
          k: row(k, hk, j),
          v: row(v, hk, j),
          bias: 0,
        }));
        const want = softmaxOver(row(q, h, i), keys, scale);
        expect(maxAbsDiff(o.subarray(idx(h, i, D, 0), idx(h, i, D, 0) + D), want.out)).toBeLessThan(
          2e-6,
        );
        expect(l[h * N + i]).toBeCloseTo(want.lse, 5);
      }
    }
  });

  it('select + attend on the selection + compressed remainder covers every visible key exactly once', async () => {
    const cpu = await createCpuBackend();
    const bq = 8;
    const bk = 8;
    const topK = 3;
    const nq = Math.ceil(N / bq);
    const p = defineProgram({
      inputs: shapes,
      steps: [
        { op: 'pool', out: 'qp', x: 'q', block: bq },
        { op: 'pool', out: 'kp', x: 'k', block: bk },
        { op: 'pool', out: 'vp', x: 'v', block: bk },
        {
          op: 'select',
          out: 'sel',
          q: 'qp',
          k: 'kp',
          spec: causal,
          blockQ: bq,
          blockKV: bk,
          topK,
          local: 1,
        },
        {
          op: 'attend',
          out: 'a',
          lse: 'la',
          spec: causal,
          q: 'q',
          k: 'k',
          v: 'v',
          selection: 'sel',
        },
        {
          op: 'compressed',
          out: 'c',
          lse: 'lc',
          q: 'q',
          k: 'kp',
          v: 'vp',
          block: bk,
          seqKV: N,
          causal: true,
          scale,
          selection: 'sel',
          selectionMode: 'exclude',
        },
        {
          op: 'merge',
          out: 'o',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 'c', lse: 'lc' },
          ],
        },
      ],
      outputs: ['o'],
    });
    const { outputs, peakBytes } = await runProgram(cpu, p, { q, k, v });
    const o = outputs.o as Float32Array;
    const qp = pooled(q, H, bq);
    const kp = pooled(k, HK, bk);
    const vp = pooled(v, HK, bk);
    let summarised = 0;
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / 2);
      for (let qb = 0; qb < nq; qb++) {
        // Independent top-k: candidates are blocks with a key at or before the block's last query.
        const last = Math.min(N, (qb + 1) * bq) - 1;
        const cand = Array.from({ length: Math.floor(last / bk) + 1 }, (_, j) => j);
        const dot = (j: number) => {
          let s = 0;
          for (let d = 0; d < D; d++)
            s += (qp[(h * nq + qb) * D + d] as number) * (kp[(hk * 6 + j) * D + d] as number);
          return s;
        };
        const forced = cand.filter((j) => j === qb);
        const ranked = cand.filter((j) => j !== qb).sort((x, y) => dot(y) - dot(x) || x - y);
        const chosen = new Set([...forced, ...ranked.slice(0, topK - forced.length)]);
        for (let i = qb * bq; i <= last; i++) {
          const keys: Key[] = [];
          for (const j of cand) {
            if (chosen.has(j)) {
              for (let t = j * bk; t < Math.min(N, (j + 1) * bk); t++)
                if (t <= i) keys.push({ k: row(k, hk, t), v: row(v, hk, t), bias: 0 });
            } else if (j < Math.floor(i / bk)) {
              const n = Math.min(bk, N - j * bk);
              keys.push({ k: row(kp, hk, j, 6), v: row(vp, hk, j, 6), bias: Math.log(n) });
              summarised++;
            }
          }
          const want = softmaxOver(row(q, h, i), keys, scale);
          expect(
            maxAbsDiff(o.subarray(idx(h, i, D, 0), idx(h, i, D, 0) + D), want.out),
          ).toBeLessThan(2e-6);
        }
      }
    }
    expect(summarised).toBeGreaterThan(100); // the remainder branch really contributed
    // Peak: inputs + the pooled tensors + the two branches' outputs, never an N×N buffer.
    expect(peakBytes).toBeLessThan(4 * (q.length + k.length + v.length) * 3);
  });

  it('compressed with a feature map: n_j φ(q)·φ(k_j) weights, lse on the softmax scale, own block skipped', async () => {
    const cpu = await createCpuBackend();
    const block = 8;
    const F = 64;
    const nb = Math.ceil(N / block);
    const kp = pooled(k, HK, block);
    const vp = pooled(v, HK, block);
    const w = randomFeatureMatrix({ featureMap: 'favor+', features: F, seed: 3 }, D);
    const { query: a, key: b } = linearInputScales(scale);
    const favor = (x: ArrayLike<number>, mul: number) => {
      let sq = 0;
      for (let d = 0; d < D; d++) sq += (mul * (x[d] as number)) ** 2;
      return Array.from({ length: F }, (_, r) => {
        let p = 0;
        for (let d = 0; d < D; d++) p += (w[r * D + d] as number) * mul * (x[d] as number);
        return Math.exp(p - sq / 2) / Math.sqrt(F);
      });
    };
    const elu = (x: ArrayLike<number>, mul: number) =>
      Array.from({ length: D }, (_, d) => {
        const y = mul * (x[d] as number);
        return y > 0 ? y + 1 : Math.exp(y);
      });
    for (const [map, phi, causalMode] of [
      ['favor+', favor, true],
      ['elu+1', elu, false],
    ] as const) {
      const p = defineProgram({
        inputs: { q: shapes.q, kp: [1, HK, nb, D], vp: [1, HK, nb, D] },
        steps: [
          {
            op: 'compressed',
            out: 'o',
            lse: 'l',
            q: 'q',
            k: 'kp',
            v: 'vp',
            block,
            seqKV: N,
            causal: causalMode,
            skipOwnBlock: !causalMode,
            scale,
            kernel: { featureMap: map, features: F, seed: 3 },
          },
        ],
        outputs: ['o', 'l'],
      });
      const { outputs } = await runProgram(cpu, p, { q, kp, vp });
      const o = outputs.o as Float32Array;
      const l = outputs.l as Float32Array;
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / 2);
        for (let i = 0; i < N; i++) {
          const pq = phi(row(q, h, i), a);
          let z = 0;
          const acc = new Array(D).fill(0);
          for (let j = 0; j < nb; j++) {
            const own = Math.floor(i / block);
            if (causalMode ? j >= own : j === own) continue;
            const pk = phi(row(kp, hk, j, nb), b);
            const n = Math.min(block, N - j * block);
            const wt = n * pq.reduce((s2, x, f) => s2 + x * (pk[f] as number), 0);
            z += wt;
            for (let d = 0; d < D; d++) acc[d] += wt * (vp[(hk * nb + j) * D + d] as number);
          }
          if (z === 0) {
            expect(l[h * N + i]).toBe(Number.NEGATIVE_INFINITY);
            continue;
          }
          const want = acc.map((x) => x / z);
          expect(
            maxAbsDiff(o.subarray(idx(h, i, D, 0), idx(h, i, D, 0) + D), want),
            map,
          ).toBeLessThan(1e-5);
          expect(Math.abs((l[h * N + i] as number) - Math.log(z)), map).toBeLessThan(1e-4);
        }
      }
    }
  });

  it('keeps a computed compression on the device for reuse by a second program', async () => {
    const cpu = await createCpuBackend();
    const compress = defineProgram({
      inputs: { k: shapes.k },
      steps: [{ op: 'pool', out: 'kp', x: 'k', block: 8 }],
      outputs: ['kp'],
    });
    const first = await runProgram(cpu, compress, { k }, { keep: ['kp'] });
    const kept = first.kept.kp as DeviceValue;
    expect(kept.shape).toEqual([1, HK, 6, D]);
    const layer2: Program = defineProgram({
      inputs: { kp: [1, HK, 6, D] },
      steps: [{ op: 'pool', out: 'kpp', x: 'kp', block: 6 }],
      outputs: ['kpp'],
    });
    const second = await runProgram(cpu, layer2, { kp: kept });
    const mean = (second.outputs.kpp as Float32Array)[0] as number;
    const pk = pooled(k, HK, 8);
    let want = 0;
    for (let j = 0; j < 6; j++) want += (pk[j * D] as number) / 6;
    expect(mean).toBeCloseTo(want, 6);
    kept.release();
    await expect(runProgram(cpu, layer2, { kp: kept })).rejects.toThrow(InputError);
  });

  it('rejects bad programs and inputs with messages naming the problem', async () => {
    const cpu = await createCpuBackend();
    expect(() =>
      defineProgram({
        inputs: { k: shapes.k },
        steps: [{ op: 'pool', out: 'p', x: 'nope', block: 4 }],
        outputs: ['p'],
      }),
    ).toThrow(/step 0 \(pool\): x 'nope' is not a tensor/);
    expect(() =>
      defineProgram({
        inputs: shapes,
        steps: [{ op: 'attend', out: 'o', spec: causal, q: 'k', k: 'k', v: 'v' }],
        outputs: ['o'],
      }),
    ).toThrow(SpecError);
    expect(() =>
      defineProgram({
        inputs: { ...shapes, qp: [1, H, 6, D], kp: [1, HK, 6, D] },
        steps: [
          {
            op: 'select',
            out: 's',
            q: 'qp',
            k: 'kp',
            spec: causal,
            blockQ: 8,
            blockKV: 8,
            topK: 1,
            local: 2,
          },
        ],
        outputs: ['qp'],
      }),
    ).toThrow(/topK 1 cannot hold/);
    const p = defineProgram({
      inputs: { k: shapes.k },
      steps: [{ op: 'pool', out: 'p', x: 'k', block: 4 }],
      outputs: ['p'],
    });
    await expect(runProgram(cpu, p, { k: k.subarray(1) })).rejects.toThrow(
      /input 'k' must have 720 elements/,
    );
    const bad = Float32Array.from(k);
    bad[3] = Number.NaN;
    await expect(runProgram(cpu, p, { k: bad })).rejects.toThrow(/non-finite value at 3/);
  });
});
