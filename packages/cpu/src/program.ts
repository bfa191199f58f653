/**
 * The reference implementation of program steps (see @tessera/core's program.ts for the
 * semantics). Tensors are Float32Arrays in [batch, heads, rows, cols] order; sums run in f64.
 * A selection is a BlockLayout with one slice per (batch, query head), every block partial.
 */
import {
  type AttendStep,
  type AttentionSpec,
  type BlockLayout,
  BlockLayoutBuilder,
  blockLayout,
  type CompressedStep,
  ceilDiv,
  defineAttention,
  type GateStep,
  type GroupStep,
  layoutSlice,
  type MergeStep,
  type PoolStep,
  type ProgramOps,
  type ProgramStep,
  type ProjectStep,
  type SelectStep,
  type Shape,
  type SubtractStep,
  UnsupportedError,
} from '@tessera/core';
import {
  compressedKernelConfig,
  dispatchStep,
  nearestCentroid,
  type StepEnv,
  type StepTable,
} from '@tessera/core/backend';
import { attendCpu } from './attend.js';
import { type LinearKernel, linearKernel } from './linear.js';

export type CpuValue =
  | { readonly kind: 'tensor'; readonly shape: Shape; readonly data: Float32Array }
  | { readonly kind: 'selection'; readonly layout: BlockLayout }
  | { readonly kind: 'grouping'; readonly grouping: Grouping };

/**
 * A `group` step's result: per (batch, head) slice of `rows` rows, `order` lists the rows by
 * (cluster, row) and `rank` is its inverse; row t is in group ⌊rank[t] / size⌋.
 */
export interface Grouping {
  readonly rows: number;
  readonly size: number;
  readonly rank: Int32Array;
  readonly order: Int32Array;
}

const tensor = (shape: Shape, data: Float32Array): CpuValue => ({ kind: 'tensor', shape, data });

function dataOf(env: StepEnv<CpuValue>, name: string): Float32Array {
  const v = env.get(name);
  if (v.kind !== 'tensor') throw new UnsupportedError(`'${name}' is a selection, not a tensor`);
  return v.data;
}

/** A step's `out` tensor, plus its `lse` when the step names one. */
function withLse(
  env: StepEnv<CpuValue>,
  step: { readonly out: string; readonly lse?: string },
  out: Float32Array,
  lse: Float32Array,
): Record<string, CpuValue> {
  const res: Record<string, CpuValue> = { [step.out]: tensor(env.shape(step.out), out) };
  if (step.lse !== undefined) res[step.lse] = tensor(env.shape(step.lse), lse);
  return res;
}

function groupingOf(env: StepEnv<CpuValue>, name: string): Grouping {
  const v = env.get(name);
  if (v.kind !== 'grouping') throw new UnsupportedError(`'${name}' is not a grouping`);
  return v.grouping;
}

function layoutOf(env: StepEnv<CpuValue>, name: string): BlockLayout {
  const v = env.get(name);
  if (v.kind !== 'selection') throw new UnsupportedError(`'${name}' is not a selection`);
  return v.layout;
}

/** The CPU's ProgramOps; `check` throws once the backend is disposed. */
export function cpuProgramOps(check: () => void): ProgramOps<CpuValue> {
  return {
    async upload(data, shape) {
      check();
      return tensor(shape, Float32Array.from(data));
    },
    async download(value) {
      if (value.kind !== 'tensor') throw new UnsupportedError('only tensors can be downloaded');
      return Float32Array.from(value.data);
    },
    bytes(value) {
      if (value.kind === 'tensor') return value.data.byteLength;
      if (value.kind === 'grouping')
        return value.grouping.rank.byteLength + value.grouping.order.byteLength;
      const l = value.layout;
      return l.rowStart.byteLength + l.kvBlocks.byteLength + l.full.byteLength;
    },
    free() {},
    async step(step, env) {
      check();
      return dispatchStep(CPU_STEPS, step, env);
    },
  };
}

/** The cpu reference's handler of every program step kind. */
const CPU_STEPS: StepTable<CpuValue> = {
  pool: async (step, env) => ({ [step.out]: pool(step, env) }),
  project: async (step, env) => ({ [step.out]: project(step, env) }),
  dense: async (step, env) => ({ [step.out]: dense(step, env) }),
  select: async (step, env) => ({
    [step.out]: { kind: 'selection', layout: select(step, env) },
  }),
  group: async (step, env) => ({ [step.out]: { kind: 'grouping', grouping: group(step, env) } }),
  attend: async (step, env) =>
    step.groupQ === undefined ? attend(step, env) : attendGrouped(step, env),
  compressed: async (step, env) => compressed(step, env),
  merge: async (step, env) => merge(step, env),
  subtract: async (step, env) => subtract(step, env),
  gate: async (step, env) => ({ [step.out]: gate(step, env) }),
};

function pool(step: PoolStep, env: StepEnv<CpuValue>): CpuValue {
  const x = dataOf(env, step.x);
  const [B, H, N, D] = env.shape(step.x);
  const w = step.weights === undefined ? null : dataOf(env, step.weights);
  const bs = step.block;
  const nb = ceilDiv(N, bs);
  const out = new Float32Array(B * H * nb * D);
  const coef = new Float64Array(bs);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let j = 0; j < nb; j++) {
        const n = Math.min(bs, N - j * bs);
        if (w === null) coef.fill(1 / n, 0, n);
        else {
          let mx = Number.NEGATIVE_INFINITY;
          for (let t = 0; t < n; t++) mx = Math.max(mx, w[h * bs + t] as number);
          let sum = 0;
          for (let t = 0; t < n; t++) {
            coef[t] = Math.exp((w[h * bs + t] as number) - mx);
            sum += coef[t] as number;
          }
          for (let t = 0; t < n; t++) coef[t] = (coef[t] as number) / sum;
        }
        acc.fill(0);
        for (let t = 0; t < n; t++) {
          const row = ((b * H + h) * N + j * bs + t) * D;
          const c = coef[t] as number;
          for (let d = 0; d < D; d++) acc[d] = (acc[d] as number) + c * (x[row + d] as number);
        }
        out.set(acc, ((b * H + h) * nb + j) * D);
      }
    }
  }
  return tensor(env.shape(step.out), out);
}

function project(step: ProjectStep, env: StepEnv<CpuValue>): CpuValue {
  const x = dataOf(env, step.x);
  const m = dataOf(env, step.matrix);
  const [B, H, N, D] = env.shape(step.x);
  const r = (env.shape(step.matrix) as Shape)[2];
  const out = new Float32Array(B * H * r * D);
  const acc = new Float64Array(D);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < r; i++) {
      acc.fill(0);
      for (let n = 0; n < N; n++) {
        const c = m[i * N + n] as number;
        const row = (bh * N + n) * D;
        for (let d = 0; d < D; d++) acc[d] = (acc[d] as number) + c * (x[row + d] as number);
      }
      out.set(acc, (bh * r + i) * D);
    }
  }
  return tensor(env.shape(step.out), out);
}

function dense(step: ProgramStep & { op: 'dense' }, env: StepEnv<CpuValue>): CpuValue {
  const x = dataOf(env, step.x);
  const w = dataOf(env, step.weight);
  const bias = step.bias === undefined ? null : dataOf(env, step.bias);
  const [B, H, N, D] = env.shape(step.x);
  const E = (env.shape(step.weight) as Shape)[3];
  const relu = step.activation === 'relu';
  const out = new Float32Array(B * H * N * E);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const row = ((b * H + h) * N + n) * D;
        for (let e = 0; e < E; e++) {
          let s = bias === null ? 0 : (bias[h * E + e] as number);
          for (let d = 0; d < D; d++)
            s += (x[row + d] as number) * (w[(h * D + d) * E + e] as number);
          out[((b * H + h) * N + n) * E + e] = relu && s < 0 ? 0 : s;
        }
      }
    }
  }
  return tensor(env.shape(step.out), out);
}

/** Candidate blocks of one row of the static layout, as a list. */
function rowBlocks(l: BlockLayout, slice: number, qb: number): number[] {
  const row = slice * l.numQBlocks + qb;
  return Array.from(l.kvBlocks.subarray(l.rowStart[row] as number, l.rowStart[row + 1] as number));
}

/** Whether KV block j meets key positions [lo, hi). */
export function isForced(step: SelectStep, qb: number, j: number): boolean {
  if (step.local === 0) return false;
  const lo = qb * step.blockQ - (step.local - 1) * step.blockKV;
  const hi = (qb + 1) * step.blockQ;
  return j * step.blockKV < hi && (j + 1) * step.blockKV > lo;
}

function select(step: SelectStep, env: StepEnv<CpuValue>): BlockLayout {
  const { spec, blockQ, blockKV, topK } = step;
  const qp = dataOf(env, step.q);
  const kp = dataOf(env, step.k);
  const { batch: B, headsQ: H, headsKV: HK, headDim: D } = spec;
  const group = H / HK;
  const stat = blockLayout(spec, { blockQ, blockKV });
  const nq = ceilDiv(spec.seqQ, blockQ);
  const nk = ceilDiv(spec.seqKV, blockKV);
  const builder = new BlockLayoutBuilder(
    { seqQ: spec.seqQ, seqKV: spec.seqKV, blockQ, blockKV, batch: B, headsQ: H },
    { batches: B, heads: H },
  );
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      for (let qb = 0; qb < nq; qb++) {
        const cand = rowBlocks(stat, layoutSlice(stat, b, h), qb);
        const forced = cand.filter((j) => isForced(step, qb, j));
        const rest = cand.filter((j) => !isForced(step, qb, j));
        const qRow = ((b * H + h) * nq + qb) * D;
        const score = (j: number): number => {
          const kRow = ((b * HK + hk) * nk + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += (qp[qRow + d] as number) * (kp[kRow + d] as number);
          return Math.fround(s);
        };
        const scored = rest.map((j) => ({ j, s: score(j) }));
        scored.sort((x, y) => y.s - x.s || x.j - y.j);
        const take = Math.min(topK, cand.length) - forced.length;
        const chosen = [...forced, ...scored.slice(0, take).map((x) => x.j)].sort((x, y) => x - y);
        for (const j of chosen) builder.push(j, false);
        builder.endRow();
      }
    }
  }
  return builder.finish();
}

function group(step: GroupStep, env: StepEnv<CpuValue>): Grouping {
  const x = dataOf(env, step.x);
  const c = dataOf(env, step.centroids);
  const [B, H, N, D] = env.shape(step.x);
  const C = (env.shape(step.centroids) as Shape)[2];
  const rank = new Int32Array(B * H * N);
  const order = new Int32Array(B * H * N);
  const cluster = new Int32Array(N);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N;
      for (let t = 0; t < N; t++)
        cluster[t] = nearestCentroid(x, (base + t) * D, c, h * C * D, C, D);
      // Counting sort by cluster, stable in t.
      const start = new Int32Array(C + 1);
      for (let t = 0; t < N; t++) start[(cluster[t] as number) + 1]++;
      for (let ci = 0; ci < C; ci++)
        start[ci + 1] = (start[ci + 1] as number) + (start[ci] as number);
      for (let t = 0; t < N; t++) {
        const r = start[cluster[t] as number]++ as number;
        rank[base + t] = r;
        order[base + r] = t;
      }
    }
  }
  return { rows: N, size: step.size, rank, order };
}

/**
 * Attention of each query to the keys of its group (core's AttendStep), causal or not, softmax or
 * a feature map (the linear spec's φ with its stabilisers, put back per key in f64).
 */
function attendGrouped(step: AttendStep, env: StepEnv<CpuValue>): Record<string, CpuValue> {
  const spec = step.spec;
  const q = dataOf(env, step.q);
  const k = dataOf(env, step.k);
  const v = dataOf(env, step.v);
  const gq = groupingOf(env, step.groupQ as string);
  const gk = groupingOf(env, step.groupKV as string);
  const { batch: B, headsQ: H, headsKV: HK, seqQ: N, seqKV: M, headDim: D, headDimV: DV } = spec;
  const causal = spec.mask !== null;
  const lin = spec.kernel.type === 'linear' ? linearKernel(spec) : null;
  const F = lin?.features ?? 0;
  const phiQ = new Float64Array(F);
  const phiK = new Float64Array(F);
  const out = new Float32Array(B * H * N * DV);
  const lse = new Float32Array(B * H * N);
  const o = new Float64Array(DV);
  const w: number[] = [];
  const keys: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      const kvBase = (b * HK + hk) * M;
      for (let i = 0; i < N; i++) {
        const r = (b * H + h) * N + i;
        // A query grouping over the KV heads serves every query head of the group.
        const qSlice = gq.rank.length === B * H * N ? b * H + h : b * HK + hk;
        const g = Math.floor((gq.rank[qSlice * N + i] as number) / gq.size);
        keys.length = 0;
        for (let m = g * gk.size; m < Math.min((g + 1) * gk.size, M); m++) {
          const j = gk.order[kvBase + m] as number;
          if (!causal || j <= i) keys.push(j);
        }
        // Log-weights of the visible keys, then their softmax-style combination.
        w.length = 0;
        let cq = 0;
        if (lin) cq = lin.map(q, r * D, lin.query, phiQ);
        let mx = Number.NEGATIVE_INFINITY;
        let den = 0;
        if (lin) {
          // den = Σ φ̃q·φ̃k_j e^{c_j − c}, c the largest key stabiliser; signed features allowed.
          const cks: number[] = [];
          const dots: number[] = [];
          for (const j of keys) {
            cks.push(lin.map(k, (kvBase + j) * D, lin.key, phiK));
            let dot = 0;
            for (let f = 0; f < F; f++) dot += (phiQ[f] as number) * (phiK[f] as number);
            dots.push(dot);
          }
          for (const c of cks) mx = Math.max(mx, c);
          keys.forEach((_, n) => {
            w.push((dots[n] as number) * Math.exp((cks[n] as number) - mx));
          });
        } else {
          const sc = keys.map((j) => {
            let s = 0;
            for (let d = 0; d < D; d++)
              s += (q[r * D + d] as number) * (k[(kvBase + j) * D + d] as number);
            return s * spec.scale;
          });
          for (const s of sc) mx = Math.max(mx, s);
          for (const s of sc) w.push(Math.exp(s - mx));
        }
        for (const x of w) den += x;
        if (!(den > 0)) {
          lse[r] = Number.NEGATIVE_INFINITY;
          continue;
        }
        o.fill(0);
        keys.forEach((j, n) => {
          const wn = w[n] as number;
          for (let d = 0; d < DV; d++)
            o[d] = (o[d] as number) + wn * (v[(kvBase + j) * DV + d] as number);
        });
        for (let d = 0; d < DV; d++) out[r * DV + d] = (o[d] as number) / den;
        lse[r] = Math.log(den) + mx + cq;
      }
    }
  }
  return withLse(env, step, out, lse);
}

function attend(step: AttendStep, env: StepEnv<CpuValue>): Record<string, CpuValue> {
  const spec: AttentionSpec = step.spec;
  const inputs = { q: dataOf(env, step.q), k: dataOf(env, step.k), v: dataOf(env, step.v) };
  const sel = step.selection === undefined ? null : layoutOf(env, step.selection);
  const res = attendCpu(spec, inputs, 'tiled', (s) => sel ?? blockLayout(s));
  return withLse(env, step, res.out, res.lse);
}

function compressed(step: CompressedStep, env: StepEnv<CpuValue>): Record<string, CpuValue> {
  const q = dataOf(env, step.q);
  const k = dataOf(env, step.k);
  const v = dataOf(env, step.v);
  const [B, H, N, D] = env.shape(step.q);
  const [, HK, NB, DV] = env.shape(step.v);
  const group = H / HK;
  const sel = step.selection === undefined ? null : layoutOf(env, step.selection);
  const out = new Float32Array(B * H * N * DV);
  const lse = new Float32Array(B * H * N);
  const o = new Float64Array(DV);
  const lin = step.kernel ? compressedFeatures(step, D) : null;
  const F = lin?.features ?? 0;
  const phiQ = new Float64Array(F);
  let phiK = new Float64Array(0);
  const cK = new Float64Array(NB);
  const logCount = (j: number): number =>
    Math.log(Math.min(step.block, step.seqKV - j * step.block));
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / group);
      if (lin && h % group === 0) {
        // Features of this KV head's summaries, once per head group.
        phiK = new Float64Array(NB * F);
        const row = new Float64Array(F);
        for (let j = 0; j < NB; j++) {
          cK[j] = lin.map(k, ((b * HK + hk) * NB + j) * D, lin.key, row);
          phiK.set(row, j * F);
        }
      }
      for (let i = 0; i < N; i++) {
        let chosen: Set<number> | null = null;
        if (sel) {
          const qb = Math.floor(i / sel.blockQ);
          chosen = new Set(rowBlocks(sel, layoutSlice(sel, b, h), qb));
        }
        let m = Number.NEGATIVE_INFINITY;
        let l = 0;
        o.fill(0);
        const qRow = ((b * H + h) * N + i) * D;
        const cq = lin ? lin.map(q, qRow, lin.query, phiQ) : 0;
        const own = Math.floor(i / step.block);
        for (let j = 0; j < NB; j++) {
          if (step.causal && j >= own) continue;
          if (step.skipOwnBlock && j === own) continue;
          if (chosen) {
            const isIn = chosen.has(j);
            if (step.selectionMode === 'exclude' ? isIn : !isIn) continue;
          }
          let s: number;
          if (lin) {
            // ln(n_j φ(q)·φ(k_j)) with the stabilisers put back; no mass, no contribution.
            let dotF = 0;
            for (let f = 0; f < F; f++) dotF += (phiQ[f] as number) * (phiK[j * F + f] as number);
            if (!(dotF > 0)) continue;
            s = Math.log(dotF) + cq + (cK[j] as number) + logCount(j);
          } else {
            const kRow = ((b * HK + hk) * NB + j) * D;
            s = 0;
            for (let d = 0; d < D; d++) s += (q[qRow + d] as number) * (k[kRow + d] as number);
            s = s * step.scale + logCount(j);
          }
          const mNew = Math.max(m, s);
          const corr = Math.exp(m - mNew);
          const p = Math.exp(s - mNew);
          l = l * corr + p;
          const vRow = ((b * HK + hk) * NB + j) * DV;
          for (let d = 0; d < DV; d++) o[d] = (o[d] as number) * corr + p * (v[vRow + d] as number);
          m = mNew;
        }
        const r = (b * H + h) * N + i;
        if (l === 0) {
          lse[r] = Number.NEGATIVE_INFINITY;
          continue;
        }
        for (let d = 0; d < DV; d++) out[r * DV + d] = (o[d] as number) / l;
        lse[r] = m + Math.log(l);
      }
    }
  }
  return withLse(env, step, out, lse);
}

const featureCache = new WeakMap<CompressedStep, LinearKernel>();

/** The feature map of a compressed step's kernel, as a linear spec of its head size defines it. */
function compressedFeatures(step: CompressedStep, headDim: number): LinearKernel {
  const hit = featureCache.get(step);
  if (hit) return hit;
  const km = step.kernel as NonNullable<CompressedStep['kernel']>;
  const kernel = compressedKernelConfig(km);
  const spec = defineAttention({
    batch: 1,
    headsQ: 1,
    seqQ: 1,
    headDim,
    scale: step.scale,
    kernel,
  });
  const lin = linearKernel(spec);
  featureCache.set(step, lin);
  return lin;
}

function merge(step: MergeStep, env: StepEnv<CpuValue>): Record<string, CpuValue> {
  const shape = env.shape(step.out);
  const [B, H, N, DV] = shape;
  const outs = step.branches.map((br) => dataOf(env, br.out));
  const lses = step.branches.map((br) => dataOf(env, br.lse));
  const out = new Float32Array(B * H * N * DV);
  const lse = new Float32Array(B * H * N);
  for (let r = 0; r < B * H * N; r++) {
    let m = Number.NEGATIVE_INFINITY;
    for (const l of lses) m = Math.max(m, l[r] as number);
    if (m === Number.NEGATIVE_INFINITY) {
      lse[r] = m;
      continue;
    }
    let sum = 0;
    const w = lses.map((l) => Math.exp((l[r] as number) - m));
    for (const x of w) sum += x;
    for (let d = 0; d < DV; d++) {
      let acc = 0;
      outs.forEach((o, bi) => {
        acc += (w[bi] as number) * (o[r * DV + d] as number);
      });
      out[r * DV + d] = acc / sum;
    }
    lse[r] = m + Math.log(sum);
  }
  return withLse(env, step, out, lse);
}

function subtract(step: SubtractStep, env: StepEnv<CpuValue>): Record<string, CpuValue> {
  const shape = env.shape(step.out);
  const [B, H, N, DV] = shape;
  const ow = dataOf(env, step.whole.out);
  const lw = dataOf(env, step.whole.lse);
  const op = dataOf(env, step.part.out);
  const lp = dataOf(env, step.part.lse);
  const out = new Float32Array(B * H * N * DV);
  const lse = new Float32Array(B * H * N);
  for (let r = 0; r < B * H * N; r++) {
    const t = Math.exp((lp[r] as number) - (lw[r] as number));
    if (lw[r] === Number.NEGATIVE_INFINITY || !(t < 1)) {
      lse[r] = Number.NEGATIVE_INFINITY;
      continue;
    }
    for (let d = 0; d < DV; d++)
      out[r * DV + d] = ((ow[r * DV + d] as number) - t * (op[r * DV + d] as number)) / (1 - t);
    lse[r] = (lw[r] as number) + Math.log1p(-t);
  }
  return withLse(env, step, out, lse);
}

function gate(step: GateStep, env: StepEnv<CpuValue>): CpuValue {
  const shape = env.shape(step.out);
  const [B, H, N, DV] = shape;
  const x = dataOf(env, step.x);
  const D = (env.shape(step.x) as Shape)[3];
  const w = dataOf(env, step.weight);
  const bias = dataOf(env, step.bias);
  const outs = step.branches.map((br) => dataOf(env, br));
  const nb = outs.length;
  const out = new Float32Array(B * H * N * DV);
  const acc = new Float64Array(DV);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const r = (b * H + h) * N + n;
        acc.fill(0);
        for (let bi = 0; bi < nb; bi++) {
          let s = bias[bi * H + h] as number;
          for (let d = 0; d < D; d++)
            s += (x[r * D + d] as number) * (w[(bi * H + h) * D + d] as number);
          const g = 1 / (1 + Math.exp(-s));
          const o = outs[bi] as Float32Array;
          for (let d = 0; d < DV; d++) acc[d] = (acc[d] as number) + g * (o[r * DV + d] as number);
        }
        out.set(acc, r * DV);
      }
    }
  }
  return tensor(shape, out);
}
