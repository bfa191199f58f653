// An independent program interpreter for the tests, written from the semantics documented in
// core's program.ts: every step by direct summation over explicit key sets (f64, tensors rounded
// to f32 between steps, as every backend stores them). Select finds its candidates by evaluating
// the mask on every (query, key) pair, not from a block layout; group sorts with a plain sort;
// masks, score modifications and feature maps come from the dense test reference of cpu's tests
// (its own expression interpreter, not compileJs). Slow and obvious on purpose.
import {
  type AttendStep,
  type AttentionSpec,
  type CompressedStep,
  defineAttention,
  type Program,
  type SelectStep,
  type Shape,
} from '@tessera/core';
import { compressedKernelConfig } from '@tessera/core/backend';
import {
  type Env,
  featureMap,
  interpret,
  toBf16,
  toF16,
} from '../../../packages/cpu/test/dense.js';
import type { DiscreteValue, ProgramReferenceResult } from '../src/index.js';

type Value =
  | { kind: 'tensor'; shape: Shape; data: Float32Array }
  | { kind: 'selection'; step: SelectStep; rows: number[][] }
  | {
      kind: 'grouping';
      heads: number;
      rows: number;
      group: number[][];
      rank: number[][];
      order: number[][];
    };

const NEG = Number.NEGATIVE_INFINITY;

function row(
  t: { shape: Shape; data: ArrayLike<number> },
  b: number,
  h: number,
  n: number,
): number[] {
  const [, H, N, D] = t.shape;
  const o = ((b * H + h) * N + n) * D;
  return Array.from({ length: D }, (_, d) => t.data[o + d] as number);
}
const dot = (a: readonly number[], b: readonly number[]): number =>
  a.reduce((s, x, i) => s + x * (b[i] as number), 0);

/** Weighted average of value rows: { out, lse = ln Σ w + shift } (nothing → 0, −∞). */
function average(w: number[], values: number[][], cols: number, shift: number) {
  const z = w.reduce((a, x) => a + x, 0);
  if (w.length === 0 || !(z > 0)) return { out: new Array<number>(cols).fill(0), lse: NEG };
  const out = new Array<number>(cols).fill(0);
  w.forEach((x, n) => {
    const v = values[n] as number[];
    for (let d = 0; d < cols; d++) out[d] = (out[d] as number) + (x * (v[d] as number)) / z;
  });
  return { out, lse: Math.log(z) + shift };
}

/** Softmax over scores (−∞ dropped): { out, lse }. */
function softmax(scores: number[], values: number[][], cols: number) {
  const keep = scores.map((s, n) => [s, n] as const).filter(([s]) => s !== NEG);
  const m = Math.max(...keep.map(([s]) => s));
  return average(
    keep.map(([s]) => Math.exp(s - m)),
    keep.map(([, n]) => values[n] as number[]),
    cols,
    keep.length > 0 ? m : 0,
  );
}

function rounder(dtype: AttentionSpec['dtype']): (x: number) => number {
  return dtype === 'f16' ? toF16 : dtype === 'bf16' ? toBf16 : (x) => x;
}

/** Feature map of a linear spec with the query/key scaling of linear attention. */
function phiOf(spec: AttentionSpec): {
  q: (x: number[]) => number[];
  k: (x: number[]) => number[];
} {
  const phi = featureMap(spec);
  const a = Math.sqrt(Math.abs(spec.scale));
  return {
    q: (x) => phi(x.map((v) => Math.sign(spec.scale) * a * v)),
    k: (x) => phi(x.map((v) => a * v)),
  };
}

/** Runs `program` on host inputs; returns its outputs and the named selections/groupings. */
export function bruteForceProgram(
  program: Program,
  inputs: Readonly<Record<string, Float32Array>>,
  exact: readonly string[],
): ProgramReferenceResult {
  const values = new Map<string, Value>();
  for (const [name, shape] of Object.entries(program.inputs))
    values.set(name, { kind: 'tensor', shape, data: inputs[name] as Float32Array });
  const t = (name: string) => {
    const v = values.get(name);
    if (v?.kind !== 'tensor') throw new Error(`'${name}' is not a tensor`);
    return v;
  };
  const put = (name: string, rows: number[][]) => {
    const shape = program.shapes[name] as Shape;
    values.set(name, { kind: 'tensor', shape, data: Float32Array.from(rows.flat()) });
  };
  const putOutLse = (
    step: { out: string; lse?: string },
    res: { out: number[]; lse: number }[],
  ) => {
    put(
      step.out,
      res.map((r) => r.out),
    );
    if (step.lse)
      put(
        step.lse,
        res.map((r) => [r.lse]),
      );
  };

  for (const step of program.steps) {
    switch (step.op) {
      case 'pool': {
        const x = t(step.x);
        const [B, H, N] = x.shape;
        const w = step.weights ? t(step.weights) : null;
        const rows: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let j = 0; j * step.block < N; j++) {
              const n = Math.min(step.block, N - j * step.block);
              const e = Array.from({ length: n }, (_, i) =>
                w ? Math.exp(w.data[h * step.block + i] as number) : 1,
              );
              const members = e.map((_, i) => row(x, b, h, j * step.block + i));
              rows.push(average(e, members, x.shape[3], 0).out);
            }
        put(step.out, rows);
        break;
      }
      case 'project': {
        const x = t(step.x);
        const m = t(step.matrix);
        const [B, H, N, D] = x.shape;
        const rows: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let i = 0; i < m.shape[2]; i++) {
              const r = new Array<number>(D).fill(0);
              for (let n = 0; n < N; n++) {
                const xr = row(x, b, h, n);
                for (let d = 0; d < D; d++)
                  r[d] = (r[d] as number) + (m.data[i * N + n] as number) * (xr[d] as number);
              }
              rows.push(r);
            }
        put(step.out, rows);
        break;
      }
      case 'dense': {
        const x = t(step.x);
        const w = t(step.weight);
        const bias = step.bias ? t(step.bias) : null;
        const [B, H, N, D] = x.shape;
        const E = w.shape[3];
        const rows: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let n = 0; n < N; n++) {
              const xr = row(x, b, h, n);
              rows.push(
                Array.from({ length: E }, (_, e) => {
                  let s = bias ? (bias.data[h * E + e] as number) : 0;
                  for (let d = 0; d < D; d++)
                    s += (xr[d] as number) * (w.data[(h * D + d) * E + e] as number);
                  return step.activation === 'relu' ? Math.max(0, s) : s;
                }),
              );
            }
        put(step.out, rows);
        break;
      }
      case 'select': {
        const { spec, blockQ: bq, blockKV: bk, topK, local } = step;
        const qp = t(step.q);
        const kp = t(step.k);
        const { batch: B, headsQ: H, headsKV: HK, seqQ, seqKV } = spec;
        const mask = spec.mask
          ? interpret(
              spec.mask.expr,
              spec.tensors.map((x) => x.data),
            )
          : null;
        const env: Env = { b: 0, h: 0, q: 0, kv: 0, score: 0 };
        const rows: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++) {
            const hk = Math.floor(h / (H / HK));
            for (let qb = 0; qb * bq < seqQ; qb++) {
              const cand: number[] = [];
              for (let j = 0; j * bk < seqKV; j++) {
                let any = false;
                for (let i = qb * bq; i < Math.min(seqQ, (qb + 1) * bq) && !any; i++)
                  for (let kv = j * bk; kv < Math.min(seqKV, (j + 1) * bk) && !any; kv++) {
                    Object.assign(env, { b, h, q: i, kv });
                    any = mask === null || Boolean(mask(env));
                  }
                if (any) cand.push(j);
              }
              const lo = qb * bq - (local - 1) * bk;
              const hi = (qb + 1) * bq;
              const forced = cand.filter((j) => local > 0 && j * bk < hi && (j + 1) * bk > lo);
              const score = (j: number) => dot(row(qp, b, h, qb), row(kp, b, hk, j));
              const rest = cand
                .filter((j) => !forced.includes(j))
                .sort((x, y) => score(y) - score(x) || x - y);
              const take = Math.min(topK, cand.length) - forced.length;
              rows.push([...forced, ...rest.slice(0, take)].sort((x, y) => x - y));
            }
          }
        values.set(step.out, { kind: 'selection', step, rows });
        break;
      }
      case 'group': {
        const x = t(step.x);
        const c = t(step.centroids);
        const [B, H, N] = x.shape;
        const C = c.shape[2];
        const group: number[][] = [];
        const rank: number[][] = [];
        const order: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++) {
            const cluster = Array.from({ length: N }, (_, n) => {
              const s = Array.from({ length: C }, (_, ci) =>
                dot(row(x, b, h, n), row(c, 0, h, ci)),
              );
              return s.indexOf(Math.max(...s));
            });
            const o = [...cluster.keys()].sort(
              (p, q) => (cluster[p] as number) - (cluster[q] as number) || p - q,
            );
            const r = new Array<number>(N);
            o.forEach((n, i) => {
              r[n] = i;
            });
            order.push(o);
            rank.push(r);
            group.push(r.map((i) => Math.floor(i / step.size)));
          }
        values.set(step.out, { kind: 'grouping', heads: H, rows: N, group, rank, order });
        break;
      }
      case 'attend':
        putOutLse(step, attend(step, t(step.q), t(step.k), t(step.v), values));
        break;
      case 'compressed':
        putOutLse(step, compressed(step, t(step.q), t(step.k), t(step.v), values));
        break;
      case 'merge': {
        const outs = step.branches.map((br) => t(br.out));
        const lses = step.branches.map((br) => t(br.lse));
        const [B, H, N, DV] = program.shapes[step.out] as Shape;
        const res: { out: number[]; lse: number }[] = [];
        for (let r = 0; r < B * H * N; r++) {
          const l = lses.map((x) => x.data[r] as number);
          const m = Math.max(...l);
          if (m === NEG) {
            res.push({ out: new Array<number>(DV).fill(0), lse: NEG });
            continue;
          }
          res.push(
            average(
              l.map((x) => Math.exp(x - m)),
              outs.map((o) => Array.from(o.data.subarray(r * DV, (r + 1) * DV))),
              DV,
              m,
            ),
          );
        }
        putOutLse(step, res);
        break;
      }
      case 'subtract': {
        const ow = t(step.whole.out);
        const lw = t(step.whole.lse);
        const op = t(step.part.out);
        const lp = t(step.part.lse);
        const [B, H, N, DV] = program.shapes[step.out] as Shape;
        const res: { out: number[]; lse: number }[] = [];
        for (let r = 0; r < B * H * N; r++) {
          const w = lw.data[r] as number;
          const tt = Math.exp((lp.data[r] as number) - w);
          if (w === NEG || !(tt < 1)) {
            res.push({ out: new Array<number>(DV).fill(0), lse: NEG });
            continue;
          }
          res.push({
            out: Array.from(
              { length: DV },
              (_, d) =>
                ((ow.data[r * DV + d] as number) - tt * (op.data[r * DV + d] as number)) / (1 - tt),
            ),
            lse: w + Math.log1p(-tt),
          });
        }
        putOutLse(step, res);
        break;
      }
      case 'gate': {
        const x = t(step.x);
        const w = t(step.weight);
        const bias = t(step.bias);
        const outs = step.branches.map((br) => t(br));
        const [B, H, N, DV] = program.shapes[step.out] as Shape;
        const rows: number[][] = [];
        for (let b = 0; b < B; b++)
          for (let h = 0; h < H; h++)
            for (let n = 0; n < N; n++) {
              const xr = row(x, b, h, n);
              const r = new Array<number>(DV).fill(0);
              outs.forEach((o, bi) => {
                const g =
                  1 /
                  (1 + Math.exp(-(dot(xr, row(w, 0, bi, h)) + (bias.data[bi * H + h] as number))));
                const or = row(o, b, h, n);
                for (let d = 0; d < DV; d++) r[d] = (r[d] as number) + g * (or[d] as number);
              });
              rows.push(r);
            }
        put(step.out, rows);
        break;
      }
    }
  }

  const outputs: Record<string, Float32Array> = {};
  for (const name of program.outputs) outputs[name] = Float32Array.from(t(name).data);
  const discrete: Record<string, DiscreteValue> = {};
  for (const name of exact) {
    const v = values.get(name);
    if (v?.kind === 'selection') {
      const rowStart = [0];
      for (const r of v.rows) rowStart.push((rowStart.at(-1) as number) + r.length);
      discrete[name] = {
        kind: 'selection',
        rowStart: Int32Array.from(rowStart),
        kvBlocks: Int32Array.from(v.rows.flat()),
      };
    } else if (v?.kind === 'grouping') {
      discrete[name] = {
        kind: 'grouping',
        rank: Int32Array.from(v.rank.flat()),
        order: Int32Array.from(v.order.flat()),
      };
    } else throw new Error(`'${name}' is not a selection or grouping`);
  }
  return { outputs, discrete };
}

function attend(
  step: AttendStep,
  q: { shape: Shape; data: Float32Array },
  k: { shape: Shape; data: Float32Array },
  v: { shape: Shape; data: Float32Array },
  values: Map<string, Value>,
): { out: number[]; lse: number }[] {
  const spec = step.spec;
  const { batch: B, headsQ: H, headsKV: HK, seqQ: N, seqKV: M, headDimV: DV } = spec;
  const round = rounder(spec.dtype);
  const rq = { shape: q.shape, data: Float64Array.from(q.data, round) };
  const rk = { shape: k.shape, data: Float64Array.from(k.data, round) };
  const rv = { shape: v.shape, data: Float64Array.from(v.data, round) };
  const tensors = spec.tensors.map((x) => x.data);
  const mask = spec.mask ? interpret(spec.mask.expr, tensors) : null;
  const mod = spec.scoreMod ? interpret(spec.scoreMod.expr, tensors) : null;
  const sel = step.selection ? (values.get(step.selection) as Value & { kind: 'selection' }) : null;
  const gq = step.groupQ ? (values.get(step.groupQ) as Value & { kind: 'grouping' }) : null;
  const gk = step.groupKV ? (values.get(step.groupKV) as Value & { kind: 'grouping' }) : null;
  const phi = spec.kernel.type === 'linear' ? phiOf(spec) : null;
  const env: Env = { b: 0, h: 0, q: 0, kv: 0, score: 0 };
  const res: { out: number[]; lse: number }[] = [];
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      const keyFeatures = phi ? Array.from({ length: M }, (_, j) => phi.k(row(rk, b, hk, j))) : [];
      for (let i = 0; i < N; i++) {
        const qi = row(rq, b, h, i);
        const keys: number[] = [];
        for (let j = 0; j < M; j++) {
          Object.assign(env, { b, h, q: i, kv: j, score: 0 });
          // Linear specs take no mask but the causal one (the dense reference reads any as causal).
          if (phi ? spec.mask !== null && j > i : mask !== null && !mask(env)) continue;
          if (sel) {
            const qb = Math.floor(i / sel.step.blockQ);
            const chosen = sel.rows[(b * H + h) * Math.ceil(N / sel.step.blockQ) + qb] as number[];
            if (!chosen.includes(Math.floor(j / sel.step.blockKV))) continue;
          }
          if (gq && gk) {
            const qs = gq.heads === H ? b * H + h : b * HK + hk;
            if (gq.group[qs]?.[i] !== gk.group[b * HK + hk]?.[j]) continue;
          }
          keys.push(j);
        }
        const vals = keys.map((j) => row(rv, b, hk, j));
        if (phi) {
          const fq = phi.q(qi);
          res.push(
            average(
              keys.map((j) => dot(fq, keyFeatures[j] as number[])),
              vals,
              DV,
              0,
            ),
          );
          continue;
        }
        const scores = keys.map((j) => {
          let s = spec.scale * dot(qi, row(rk, b, hk, j));
          if (mod) {
            Object.assign(env, { b, h, q: i, kv: j, score: s });
            s = mod(env) as number;
          }
          return s;
        });
        res.push(softmax(scores, vals, DV));
      }
    }
  return res;
}

function compressed(
  step: CompressedStep,
  q: { shape: Shape; data: Float32Array },
  k: { shape: Shape; data: Float32Array },
  v: { shape: Shape; data: Float32Array },
  values: Map<string, Value>,
): { out: number[]; lse: number }[] {
  const [B, H, N, D] = q.shape;
  const [, HK, NB, DV] = v.shape;
  const sel = step.selection ? (values.get(step.selection) as Value & { kind: 'selection' }) : null;
  const phi = step.kernel
    ? phiOf(
        defineAttention({
          batch: 1,
          headsQ: 1,
          seqQ: 1,
          headDim: D,
          scale: step.scale,
          kernel: compressedKernelConfig(step.kernel),
        }),
      )
    : null;
  const res: { out: number[]; lse: number }[] = [];
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let i = 0; i < N; i++) {
        const own = Math.floor(i / step.block);
        const chosen = sel
          ? (sel.rows[
              (b * H + h) * Math.ceil(N / sel.step.blockQ) + Math.floor(i / sel.step.blockQ)
            ] as number[])
          : null;
        const js: number[] = [];
        for (let j = 0; j < NB; j++) {
          if (step.causal && j >= own) continue;
          if (step.skipOwnBlock && j === own) continue;
          if (chosen && chosen.includes(j) === (step.selectionMode === 'exclude')) continue;
          js.push(j);
        }
        const count = (j: number) => Math.min(step.block, step.seqKV - j * step.block);
        const vals = js.map((j) => row(v, b, hk, j));
        const qi = row(q, b, h, i);
        if (phi) {
          const fq = phi.q(qi);
          res.push(
            average(
              js.map((j) => count(j) * dot(fq, phi.k(row(k, b, hk, j)))),
              vals,
              DV,
              0,
            ),
          );
        } else {
          const scores = js.map((j) => step.scale * dot(qi, row(k, b, hk, j)) + Math.log(count(j)));
          res.push(softmax(scores, vals, DV));
        }
      }
    }
  return res;
}
