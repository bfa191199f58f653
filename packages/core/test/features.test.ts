import { describe, expect, it } from 'vitest';
import {
  gaussianAt,
  hashUnit,
  linearInputScales,
  randomFeatureMatrix,
} from '../src/backend-api.js';
import { SpecError } from '../src/index.js';

const dot = (a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, n: number) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i] * b[bo + i];
  return s;
};

// The documented feature maps, written from the doc comment in features.ts.
function favorFeatures(w: Float32Array, m: number, d: number, x: number[]): number[] {
  const sq = dot(x, 0, x, 0, d);
  return Array.from(
    { length: m },
    (_, r) => Math.exp(dot(w, r * d, x, 0, d) - sq / 2) / Math.sqrt(m),
  );
}
function trigFeatures(w: Float32Array, m: number, d: number, x: number[]): number[] {
  const amp = Math.exp(dot(x, 0, x, 0, d) / 2) / Math.sqrt(m);
  const proj = Array.from({ length: m }, (_, r) => dot(w, r * d, x, 0, d));
  return [...proj.map((p) => amp * Math.sin(p)), ...proj.map((p) => amp * Math.cos(p))];
}

describe('randomFeatureMatrix', () => {
  it('is a pure function of (featureMap, features, seed, headDim)', () => {
    const a = randomFeatureMatrix({ featureMap: 'favor+', features: 40, seed: 7 }, 16);
    const b = randomFeatureMatrix({ featureMap: 'favor+', features: 40, seed: 7 }, 16);
    const c = randomFeatureMatrix({ featureMap: 'favor+', features: 40, seed: 8 }, 16);
    expect(a).toBeInstanceOf(Float32Array);
    expect(a.length).toBe(40 * 16);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    const big = randomFeatureMatrix({ featureMap: 'trig-rf', features: 3, seed: 0xffffffff }, 5);
    expect(big.every(Number.isFinite)).toBe(true);
  });

  it('draws Box–Muller Gaussians from the counter hash, as documented', () => {
    const u = hashUnit([3, 0, 2, 5]);
    const v = hashUnit([3, 1, 2, 5]);
    expect(gaussianAt(3, 0, 2, 5)).toBe(
      Math.sqrt(-2 * Math.log(1 - u)) * Math.cos(2 * Math.PI * v),
    );
    const w = randomFeatureMatrix({ featureMap: 'trig-rf', features: 4, seed: 3 }, 6);
    expect(w[2 * 6 + 5]).toBe(Math.fround(gaussianAt(3, 0, 2, 5)));
  });

  it('trig-rf entries have standard normal moments', () => {
    const w = randomFeatureMatrix({ featureMap: 'trig-rf', features: 512, seed: 11 }, 64);
    let s1 = 0;
    let s2 = 0;
    let s4 = 0;
    for (const x of w) {
      s1 += x;
      s2 += x * x;
      s4 += x ** 4;
    }
    const n = w.length;
    expect(Math.abs(s1 / n)).toBeLessThan(0.03);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.04);
    expect(Math.abs(s4 / n / (s2 / n) ** 2 - 3)).toBeLessThan(0.2);
  });

  it('favor+ rows are orthogonal within each block of headDim rows, with chi(D) norms', () => {
    const d = 16;
    const m = 40; // blocks of 16, 16 and 8 rows
    const seed = 5;
    const w = randomFeatureMatrix({ featureMap: 'favor+', features: m, seed }, d);
    for (let r = 0; r < m; r++) {
      let sq = 0;
      for (let c = 0; c < d; c++) {
        const u = hashUnit([seed, 2, r, c]);
        const v = hashUnit([seed, 3, r, c]);
        sq += (Math.sqrt(-2 * Math.log(1 - u)) * Math.cos(2 * Math.PI * v)) ** 2;
      }
      expect(Math.sqrt(dot(w, r * d, w, r * d, d))).toBeCloseTo(Math.sqrt(sq), 5);
      for (let p = 0; p < m; p++) {
        if (p === r) continue;
        const cos =
          dot(w, r * d, w, p * d, d) /
          Math.sqrt(dot(w, r * d, w, r * d, d) * dot(w, p * d, w, p * d, d));
        if (Math.floor(p / d) === Math.floor(r / d)) expect(Math.abs(cos)).toBeLessThan(1e-6);
        else expect(Math.abs(cos)).toBeGreaterThan(1e-9);
      }
    }
    // Mean squared norm of chi(D) rows is D.
    const wide = randomFeatureMatrix({ featureMap: 'favor+', features: 2048, seed: 9 }, d);
    let total = 0;
    for (let r = 0; r < 2048; r++) total += dot(wide, r * d, wide, r * d, d);
    expect(Math.abs(total / 2048 / d - 1)).toBeLessThan(0.05);
  });

  it('the documented favor+ and trig-rf maps estimate the softmax kernel exp(x·y)', () => {
    const d = 8;
    const m = 8192;
    const x = Array.from({ length: d }, (_, i) => 0.25 * Math.sin(i + 1));
    const y = Array.from({ length: d }, (_, i) => 0.25 * Math.cos(2 * i + 1));
    const exact = Math.exp(dot(x, 0, y, 0, d));
    const wf = randomFeatureMatrix({ featureMap: 'favor+', features: m, seed: 1 }, d);
    const fx = favorFeatures(wf, m, d, x);
    const fy = favorFeatures(wf, m, d, y);
    expect(dot(fx, 0, fy, 0, m) / exact).toBeCloseTo(1, 1);
    const wt = randomFeatureMatrix({ featureMap: 'trig-rf', features: m, seed: 2 }, d);
    const tx = trigFeatures(wt, m, d, x);
    const ty = trigFeatures(wt, m, d, y);
    expect(dot(tx, 0, ty, 0, 2 * m) / exact).toBeCloseTo(1, 1);
  });

  it('rejects maps without random features and bad sizes with SpecError', () => {
    expect(() => randomFeatureMatrix({ featureMap: 'relu', features: 4, seed: 0 }, 4)).toThrow(
      /feature map 'relu' has no random features/,
    );
    expect(() => randomFeatureMatrix({ featureMap: 'favor+', features: 0, seed: 0 }, 4)).toThrow(
      SpecError,
    );
    expect(() => randomFeatureMatrix({ featureMap: 'favor+', features: 4, seed: -1 }, 4)).toThrow(
      /kernel.seed/,
    );
    expect(() => randomFeatureMatrix({ featureMap: 'trig-rf', features: 4, seed: 0 }, 2.5)).toThrow(
      /headDim/,
    );
  });
});

describe('linearInputScales', () => {
  it('splits the scale so that x · y = scale · q · k, whatever its sign', () => {
    for (const scale of [0.125, 3, -0.5]) {
      const { query, key } = linearInputScales(scale);
      expect(key).toBeGreaterThan(0);
      expect(query * key).toBeCloseTo(scale, 12);
    }
  });
});
