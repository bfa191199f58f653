/**
 * Attention programs: several key/value sources, several attention branches, one merged output.
 *
 * A program is a list of steps over named 4-d tensors `[batch, heads, rows, cols]` (always the
 * 'bhsd' order). Steps derive key/value sources (pooled blocks, low-rank sequence projections,
 * token-wise projections), pick blocks by content (`select`, whose result stays on the device),
 * attend (`attend` runs an AttentionSpec, optionally restricted to a selection; `compressed`
 * attends to block summaries) and merge branches (exactly by log-sum-exp, or by learned gates).
 *
 * `defineProgram` checks every step and infers every shape, so a backend receives a program whose
 * shapes are known to agree; `runProgram` runs it on any backend that implements `ProgramOps`.
 */
import { SpecError } from './errors.js';
import { ceilDiv } from './layout.js';
import { type AttentionSpec, assertSpec, isCausalExpr, type KernelConfig } from './spec.js';

/** `[batch, heads, rows, cols]`. */
export type Shape = readonly [number, number, number, number];

export type ProgramStep =
  | PoolStep
  | ProjectStep
  | DenseStep
  | SelectStep
  | AttendStep
  | CompressedStep
  | MergeStep
  | SubtractStep
  | GateStep
  | GroupStep;

/**
 * Summaries of consecutive blocks of `block` rows: `out[b,h,j] = Σ_t w_t x[b,h,j·block+t]`, with
 * w the softmax of `weights[h, 0..n_j)` over the n_j rows block j has (the mean when there are no
 * weights). `weights`: `[1, heads, 1, block]`. Output rows: ceil(rows / block).
 */
export interface PoolStep {
  readonly op: 'pool';
  readonly out: string;
  readonly x: string;
  readonly block: number;
  readonly weights?: string;
}

/**
 * Low-rank sequence projection (Linformer's E and F): `out[b,h,i] = Σ_n matrix[i,n] x[b,h,n]`.
 * `matrix`: `[1, 1, r, rows]`, shared by batches and heads. Output rows: r.
 */
export interface ProjectStep {
  readonly op: 'project';
  readonly out: string;
  readonly x: string;
  readonly matrix: string;
}

/**
 * Token-wise projection per head: `out[b,h,n] = act(x[b,h,n] · weight[h] + bias[h])`.
 * `weight`: `[1, heads, cols, outCols]`; `bias`: `[1, heads, 1, outCols]`.
 */
export interface DenseStep {
  readonly op: 'dense';
  readonly out: string;
  readonly x: string;
  readonly weight: string;
  readonly bias?: string;
  readonly activation?: 'none' | 'relu';
}

/**
 * Content-dependent block selection. `q` holds one summary per query block
 * (`[batch, headsQ, ceil(seqQ/blockQ), headDim]`), `k` one per key block
 * (`[batch, headsKV, ceil(seqKV/blockKV), headDim]`). For each (batch, query head, query block)
 * the candidates are the KV blocks `spec`'s mask leaves non-empty at these block sizes. The `local`
 * forced blocks are the candidates that meet key positions
 * `[qb·blockQ − (local−1)·blockKV, (qb+1)·blockQ)`; the remaining `topK − forced` slots go to the
 * candidates with the largest `q·k` (ties to the lower block). Each row keeps
 * `min(topK, candidates)` blocks in ascending order. The result is a block layout held by the
 * backend (on the device for GPU backends); `attend` and `compressed` read it.
 */
export interface SelectStep {
  readonly op: 'select';
  readonly out: string;
  readonly q: string;
  readonly k: string;
  readonly spec: AttentionSpec;
  readonly blockQ: number;
  readonly blockKV: number;
  readonly topK: number;
  readonly local: number;
}

/**
 * Groups rows by content. Row t of `x` (`[batch, heads, rows, cols]`) goes to the cluster
 * `c(t) = argmax_c x_t · centroids[h, c]` (ties to the lower c; a backend that sums the scores in
 * f32 may split near-ties differently);
 * the rows are ordered by `(c(t), t)` and that order is cut into consecutive groups of `size`
 * rows (the last may be shorter), so every group but the last has exactly `size` rows and row t
 * belongs to group `⌊rank(t) / size⌋`, rank(t) being its place in the order. `centroids`:
 * `[1, heads, clusters, cols]`. The result is a grouping held by the backend (on the device for
 * GPU backends), with rank and order per (batch, head); `attend` reads it.
 */
export interface GroupStep {
  readonly op: 'group';
  readonly out: string;
  readonly x: string;
  readonly centroids: string;
  readonly size: number;
}

/**
 * The `group` step's routing rule for one row: the cluster c whose centroid (row c of the
 * `clusters × cols` block at `cOff`) has the largest dot product with the row at `xOff`; ties go
 * to the lower c. Summed in f64 here (host-side references and fitting use this).
 */
export function nearestCentroid(
  x: ArrayLike<number>,
  xOff: number,
  centroids: ArrayLike<number>,
  cOff: number,
  clusters: number,
  cols: number,
): number {
  let best = 0;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (let c = 0; c < clusters; c++) {
    let s = 0;
    for (let d = 0; d < cols; d++)
      s += (x[xOff + d] as number) * (centroids[cOff + c * cols + d] as number);
    if (s > bestScore) {
      bestScore = s;
      best = c;
    }
  }
  return best;
}

/**
 * Runs `spec` (softmax or linear kernel) on `q`, `k`, `v`, whose shapes must be the spec's in
 * 'bhsd' order. With `selection` (made by a `select` step for this spec), only the selected KV
 * blocks are visited; the spec's mask still applies inside them. `lse`: `[batch, headsQ, seqQ, 1]`.
 *
 * With `groupQ` and `groupKV` (groupings made by `group` steps: of the `seqQ` query rows over
 * `headsQ` heads, or over `headsKV` heads, query head h then reading its KV head's slice; and of
 * the `seqKV` key rows over `headsKV` heads), query i of head h sees key j of KV head
 * hk = h/(headsQ/headsKV) only when their group numbers are equal, and the spec's mask (none or
 * causal `q >= kv`; no score modification; f32) allows it. Pass one grouping to both when queries
 * and keys are the same tokens grouped once (e.g. by their keys).
 */
export interface AttendStep {
  readonly op: 'attend';
  readonly out: string;
  readonly lse?: string;
  readonly spec: AttentionSpec;
  readonly q: string;
  readonly k: string;
  readonly v: string;
  readonly selection?: string;
  readonly groupQ?: string;
  readonly groupKV?: string;
}

/**
 * Softmax attention to block summaries. `k`, `v`: summaries of blocks of `block` keys of a
 * sequence of `seqKV` keys (`[batch, headsKV, ceil(seqKV/block), cols]`). Summary j stands for
 * its n_j keys: its score is `scale·q·k_j + ln n_j`. Causal: query i sees summary j only for
 * blocks strictly before its own block (`j < ⌊i / block⌋`), so an exact branch over the query's
 * own block and this one cover every key at or before i exactly once. With `selection` (blockKV = block), `'exclude'` skips the blocks
 * selected for the query's block and `'only'` keeps just those.
 */
export interface CompressedStep {
  readonly op: 'compressed';
  readonly out: string;
  readonly lse?: string;
  readonly q: string;
  readonly k: string;
  readonly v: string;
  readonly block: number;
  readonly seqKV: number;
  readonly causal: boolean;
  readonly scale: number;
  readonly selection?: string;
  readonly selectionMode?: 'exclude' | 'only';
  /** Also skip the query's own block (`j = ⌊i / block⌋`); for bidirectional "other blocks". */
  readonly skipOwnBlock?: boolean;
  /**
   * A feature map instead of softmax: summary j gets weight `n_j · φ(q)·φ(k_j)` with φ, the
   * query/key scaling and the stabilisers of linear specs (core's features.ts), and
   * `lse = ln Σ_j n_j φ(q)·φ(k_j)`, which for 'favor+' estimates the softmax branch's lse, so the
   * branch merges with exact ones by log-sum-exp. Maps with signed features ('trig-rf') are refused.
   */
  readonly kernel?: CompressedKernel;
}

export interface CompressedKernel {
  readonly featureMap: 'favor+' | 'elu+1' | 'relu';
  /** Random features for 'favor+' (default COMPRESSED_DEFAULT_FEATURES, 256). */
  readonly features?: number;
  readonly seed?: number;
}

/** Default random features of a 'favor+' compressed kernel. */
export const COMPRESSED_DEFAULT_FEATURES = 256;

/**
 * The linear-spec kernel a compressed step's feature map means: every backend builds its feature
 * map, input scaling, stabilisers and random matrix from this, as for a linear spec.
 */
export function compressedKernelConfig(kernel: CompressedKernel): KernelConfig {
  return kernel.featureMap === 'favor+'
    ? {
        type: 'linear',
        featureMap: 'favor+',
        features: kernel.features ?? COMPRESSED_DEFAULT_FEATURES,
        seed: kernel.seed ?? 0,
      }
    : { type: 'linear', featureMap: kernel.featureMap };
}

/**
 * Exact merge of branches over disjoint key sets: `L = ln Σ e^{l_b}`,
 * `out = Σ e^{l_b − L} out_b`; rows where every branch is empty give 0 and L = −∞.
 */
export interface MergeStep {
  readonly op: 'merge';
  readonly out: string;
  readonly lse?: string;
  readonly branches: readonly { readonly out: string; readonly lse: string }[];
}

/**
 * Gated merge: `out = Σ_b σ(x·weight[b,h] + bias[b,h]) · branches[b]`. `x`: `[batch, heads, rows,
 * cols]` (usually the queries); `weight`: `[1, branches, heads, cols]`; `bias`:
 * `[1, 1, branches, heads]`. Per-head gates: a zero weight leaves only the bias.
 */
/**
 * What a kernel branch sees outside one of its parts: `whole` attends (with a feature-map kernel)
 * to a set of keys, `part` to a subset of it with the same feature map, so `e^lse` are their
 * normalisers. With `t = e^{l_p − l_w}`: `out = (o_w − t·o_p) / (1 − t)`,
 * `lse = l_w + ln(1 − t)`; rows with `t ≥ 1` (nothing left) or an empty `whole` give 0 and −∞.
 * In f32 the difference loses the digits the part shares with the whole.
 */
export interface SubtractStep {
  readonly op: 'subtract';
  readonly out: string;
  readonly lse?: string;
  readonly whole: { readonly out: string; readonly lse: string };
  readonly part: { readonly out: string; readonly lse: string };
}

export interface GateStep {
  readonly op: 'gate';
  readonly out: string;
  readonly x: string;
  readonly weight: string;
  readonly bias: string;
  readonly branches: readonly string[];
}

export interface ProgramConfig {
  /** Host inputs by name with their shapes. */
  readonly inputs: Readonly<Record<string, Shape>>;
  readonly steps: readonly ProgramStep[];
  /** Names returned by runProgram (tensors, not selections). */
  readonly outputs: readonly string[];
}

export type ValueKind = 'tensor' | 'selection' | 'grouping';

export interface Program {
  readonly inputs: Readonly<Record<string, Shape>>;
  readonly steps: readonly ProgramStep[];
  readonly outputs: readonly string[];
  /** Shape of every tensor the program names (selections excluded). */
  readonly shapes: Readonly<Record<string, Shape>>;
  /** For each step, the names whose last use it is (freed after it). */
  readonly lastUse: readonly (readonly string[])[];
}

function posInt(where: string, field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > 2 ** 31 - 1)
    throw new SpecError(`${where}: ${field} must be a positive integer (got ${String(v)})`);
  return v;
}

function sameShape(a: Shape, b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** The name of a program step kind. */
export type StepOp = ProgramStep['op'];
/** The step type of kind `K`. */
export type StepOf<K extends StepOp> = Extract<ProgramStep, { op: K }>;

/**
 * What `defineProgram` knows while it checks steps in order: the values defined so far and their
 * shapes. A step's `check` reads its inputs through it and defines its outputs with it.
 */
export class StepChecker {
  readonly shapes: Record<string, Shape> = {};
  readonly kinds = new Map<string, ValueKind>();
  readonly selections = new Map<string, SelectStep>();
  /** Grouping name → [batch, heads, rows] it groups. */
  readonly groupings = new Map<string, readonly [number, number, number]>();

  define(where: string, name: unknown, kind: ValueKind, shape?: Shape): void {
    if (typeof name !== 'string' || name.length === 0)
      throw new SpecError(`${where}: output name must be a non-empty string`);
    if (this.kinds.has(name)) throw new SpecError(`${where}: '${name}' is already defined`);
    this.kinds.set(name, kind);
    if (shape) this.shapes[name] = Object.freeze([...shape]) as unknown as Shape;
  }
  tensor(where: string, field: string, name: unknown): Shape {
    if (typeof name !== 'string' || this.kinds.get(name) !== 'tensor')
      throw new SpecError(
        `${where}: ${field} '${String(name)}' is not a tensor defined by an input or an earlier step`,
      );
    return this.shapes[name] as Shape;
  }
  expect(where: string, field: string, got: Shape, want: readonly number[]): void {
    if (!sameShape(got, want))
      throw new SpecError(`${where}: ${field} must have shape ${fmt(want)} (got ${fmt(got)})`);
  }
  spec(where: string, spec: AttentionSpec): AttentionSpec {
    assertSpec(spec, where);
    if (spec.layout !== 'bhsd')
      throw new SpecError(`${where}: programs use the 'bhsd' layout (spec has '${spec.layout}')`);
    return spec;
  }
  /** The select step that made `name`, or a SpecError naming the field. */
  selection(where: string, name: string): SelectStep {
    const sel = this.selections.get(name);
    if (!sel) throw new SpecError(`${where}: selection '${name}' is not a select step's output`);
    return sel;
  }
}

/**
 * One program step kind, defined once: how it is checked (and its output shapes inferred) and
 * which names it reads and writes. Backends handle every kind through a `StepTable`.
 */
export interface StepDefinition<S extends ProgramStep> {
  /** Checks the step against the values defined so far and defines its outputs. */
  check(step: S, where: string, c: StepChecker): void;
  /** Names the step reads. */
  reads(step: S): string[];
  /** Names the step writes. */
  writes(step: S): string[];
}

const outAndLse = (step: { out: string; lse?: string }): string[] => [
  step.out,
  ...(step.lse ? [step.lse] : []),
];
const optional = (...names: (string | undefined)[]): string[] =>
  names.filter((n): n is string => n !== undefined);

/** Every step kind; adding a kind to ProgramStep is a compile error until it is defined here. */
export const PROGRAM_STEPS: { readonly [K in StepOp]: StepDefinition<StepOf<K>> } = {
  pool: {
    check(step, where, c) {
      const x = c.tensor(where, 'x', step.x);
      const block = posInt(where, 'block', step.block);
      if (step.weights !== undefined)
        c.expect(where, 'weights', c.tensor(where, 'weights', step.weights), [1, x[1], 1, block]);
      c.define(where, step.out, 'tensor', [x[0], x[1], ceilDiv(x[2], block), x[3]]);
    },
    reads: (step) => [step.x, ...optional(step.weights)],
    writes: (step) => [step.out],
  },
  project: {
    check(step, where, c) {
      const x = c.tensor(where, 'x', step.x);
      const m = c.tensor(where, 'matrix', step.matrix);
      if (m[0] !== 1 || m[1] !== 1 || m[3] !== x[2])
        throw new SpecError(`${where}: matrix must have shape [1, 1, r, ${x[2]}] (got ${fmt(m)})`);
      c.define(where, step.out, 'tensor', [x[0], x[1], m[2], x[3]]);
    },
    reads: (step) => [step.x, step.matrix],
    writes: (step) => [step.out],
  },
  dense: {
    check(step, where, c) {
      const x = c.tensor(where, 'x', step.x);
      const w = c.tensor(where, 'weight', step.weight);
      if (w[0] !== 1 || w[1] !== x[1] || w[2] !== x[3])
        throw new SpecError(
          `${where}: weight must have shape [1, ${x[1]}, ${x[3]}, outCols] (got ${fmt(w)})`,
        );
      if (step.bias !== undefined)
        c.expect(where, 'bias', c.tensor(where, 'bias', step.bias), [1, x[1], 1, w[3]]);
      if (step.activation !== undefined && step.activation !== 'none' && step.activation !== 'relu')
        throw new SpecError(`${where}: activation must be 'none' or 'relu'`);
      c.define(where, step.out, 'tensor', [x[0], x[1], x[2], w[3]]);
    },
    reads: (step) => [step.x, step.weight, ...optional(step.bias)],
    writes: (step) => [step.out],
  },
  select: {
    check(step, where, c) {
      const spec = c.spec(where, step.spec);
      const bq = posInt(where, 'blockQ', step.blockQ);
      const bk = posInt(where, 'blockKV', step.blockKV);
      posInt(where, 'topK', step.topK);
      if (typeof step.local !== 'number' || !Number.isInteger(step.local) || step.local < 0)
        throw new SpecError(`${where}: local must be a non-negative integer`);
      // Blocks meeting [qb·bq − (local−1)·bk, (qb+1)·bq): one fewer when the range is block-aligned.
      const forcedMax =
        step.local === 0
          ? 0
          : bq % bk === 0
            ? bq / bk + step.local - 1
            : ceilDiv(bq, bk) + step.local;
      if (step.local > 0 && step.topK < forcedMax)
        throw new SpecError(
          `${where}: topK ${step.topK} cannot hold the up to ${forcedMax} forced local blocks (local ${step.local}, blockQ ${bq}, blockKV ${bk})`,
        );
      c.expect(where, 'q', c.tensor(where, 'q', step.q), [
        spec.batch,
        spec.headsQ,
        ceilDiv(spec.seqQ, bq),
        spec.headDim,
      ]);
      c.expect(where, 'k', c.tensor(where, 'k', step.k), [
        spec.batch,
        spec.headsKV,
        ceilDiv(spec.seqKV, bk),
        spec.headDim,
      ]);
      if (spec.kernel.type !== 'softmax')
        throw new SpecError(`${where}: selection needs a softmax spec`);
      c.define(where, step.out, 'selection');
      c.selections.set(step.out, step);
    },
    reads: (step) => [step.q, step.k],
    writes: (step) => [step.out],
  },
  group: {
    check(step, where, c) {
      const x = c.tensor(where, 'x', step.x);
      const cen = c.tensor(where, 'centroids', step.centroids);
      if (cen[0] !== 1 || cen[1] !== x[1] || cen[3] !== x[3])
        throw new SpecError(
          `${where}: centroids must have shape [1, ${x[1]}, clusters, ${x[3]}] (got ${fmt(cen)})`,
        );
      posInt(where, 'size', step.size);
      if (step.size > x[2])
        throw new SpecError(`${where}: size ${step.size} exceeds the ${x[2]} rows of '${step.x}'`);
      c.define(where, step.out, 'grouping');
      c.groupings.set(step.out, [x[0], x[1], x[2]]);
    },
    reads: (step) => [step.x, step.centroids],
    writes: (step) => [step.out],
  },
  attend: {
    check(step, where, c) {
      const spec = c.spec(where, step.spec);
      const { batch: B, headsQ, headsKV, seqQ, seqKV, headDim, headDimV } = spec;
      c.expect(where, 'q', c.tensor(where, 'q', step.q), [B, headsQ, seqQ, headDim]);
      c.expect(where, 'k', c.tensor(where, 'k', step.k), [B, headsKV, seqKV, headDim]);
      c.expect(where, 'v', c.tensor(where, 'v', step.v), [B, headsKV, seqKV, headDimV]);
      if (step.selection !== undefined) {
        const sel = c.selection(where, step.selection);
        if (sel.spec.hash !== spec.hash)
          throw new SpecError(`${where}: selection '${step.selection}' was made for another spec`);
      }
      if (step.groupQ !== undefined || step.groupKV !== undefined) {
        if (step.groupQ === undefined || step.groupKV === undefined)
          throw new SpecError(`${where}: groupQ and groupKV go together`);
        if (step.selection !== undefined)
          throw new SpecError(`${where}: a grouped attend cannot also walk a selection`);
        const want = (field: string, name: string, heads: number[], rows: number): void => {
          const g = c.groupings.get(name);
          if (!g) throw new SpecError(`${where}: ${field} '${name}' is not a group step's output`);
          if (g[0] !== B || !heads.includes(g[1]) || g[2] !== rows)
            throw new SpecError(
              `${where}: ${field} '${name}' must group [${B}, ${[...new Set(heads)].join(' or ')}, ${rows}] rows (it groups ${fmt(g)})`,
            );
        };
        want('groupQ', step.groupQ, [headsQ, headsKV], seqQ);
        want('groupKV', step.groupKV, [headsKV], seqKV);
        if (spec.mask !== null && !isCausalExpr(spec.mask.expr))
          throw new SpecError(
            `${where}: a grouped attend takes no mask or the causal one (got '${spec.mask.name}')`,
          );
        if (spec.scoreMod !== null)
          throw new SpecError(
            `${where}: a grouped attend takes no score modification (got '${spec.scoreMod.name}')`,
          );
        if (spec.dtype !== 'f32')
          throw new SpecError(`${where}: a grouped attend runs in f32 (spec has '${spec.dtype}')`);
      }
      c.define(where, step.out, 'tensor', [B, headsQ, seqQ, headDimV]);
      if (step.lse !== undefined) c.define(where, step.lse, 'tensor', [B, headsQ, seqQ, 1]);
    },
    reads: (step) => [
      step.q,
      step.k,
      step.v,
      ...optional(step.selection, step.groupQ, step.groupKV),
    ],
    writes: outAndLse,
  },
  compressed: {
    check(step, where, c) {
      const q = c.tensor(where, 'q', step.q);
      const k = c.tensor(where, 'k', step.k);
      const v = c.tensor(where, 'v', step.v);
      const block = posInt(where, 'block', step.block);
      const seqKV = posInt(where, 'seqKV', step.seqKV);
      const nb = ceilDiv(seqKV, block);
      if (k[0] !== q[0] || k[2] !== nb || k[3] !== q[3] || q[1] % k[1] !== 0)
        throw new SpecError(
          `${where}: k must have shape [${q[0]}, a divisor of ${q[1]}, ${nb}, ${q[3]}] (got ${fmt(k)})`,
        );
      if (v[0] !== k[0] || v[1] !== k[1] || v[2] !== nb)
        throw new SpecError(
          `${where}: v must have shape [${k[0]}, ${k[1]}, ${nb}, cols] (got ${fmt(v)})`,
        );
      if (typeof step.causal !== 'boolean')
        throw new SpecError(`${where}: causal must be a boolean`);
      if (typeof step.scale !== 'number' || !Number.isFinite(step.scale))
        throw new SpecError(`${where}: scale must be a finite number`);
      if (step.skipOwnBlock !== undefined && typeof step.skipOwnBlock !== 'boolean')
        throw new SpecError(`${where}: skipOwnBlock must be a boolean`);
      if (step.kernel !== undefined) {
        const km = step.kernel as CompressedKernel;
        if (
          typeof km !== 'object' ||
          km === null ||
          !['favor+', 'elu+1', 'relu'].includes(km.featureMap)
        )
          throw new SpecError(
            `${where}: kernel.featureMap must be 'favor+', 'elu+1' or 'relu' (got ${JSON.stringify((km as { featureMap?: unknown } | null)?.featureMap)})`,
          );
        if (km.features !== undefined) posInt(where, 'kernel.features', km.features);
        if (km.seed !== undefined && !Number.isInteger(km.seed))
          throw new SpecError(`${where}: kernel.seed must be an integer`);
      }
      if (step.selection !== undefined) {
        const sel = c.selection(where, step.selection);
        if (
          sel.blockKV !== block ||
          sel.spec.seqKV !== seqKV ||
          sel.spec.seqQ !== q[2] ||
          sel.spec.headsQ !== q[1]
        )
          throw new SpecError(
            `${where}: selection '${step.selection}' must select blocks of ${block} of ${seqKV} keys for ${q[1]} heads × ${q[2]} queries`,
          );
        if (step.selectionMode !== 'exclude' && step.selectionMode !== 'only')
          throw new SpecError(`${where}: selectionMode must be 'exclude' or 'only'`);
      } else if (step.selectionMode !== undefined) {
        throw new SpecError(`${where}: selectionMode needs a selection`);
      }
      c.define(where, step.out, 'tensor', [q[0], q[1], q[2], v[3]]);
      if (step.lse !== undefined) c.define(where, step.lse, 'tensor', [q[0], q[1], q[2], 1]);
    },
    reads: (step) => [step.q, step.k, step.v, ...optional(step.selection)],
    writes: outAndLse,
  },
  merge: {
    check(step, where, c) {
      if (!Array.isArray(step.branches) || step.branches.length < 2)
        throw new SpecError(`${where}: branches must list at least two { out, lse }`);
      const first = c.tensor(where, 'branches[0].out', step.branches[0]?.out);
      step.branches.forEach((br: MergeStep['branches'][number], j: number) => {
        c.expect(where, `branches[${j}].out`, c.tensor(where, `branches[${j}].out`, br.out), first);
        c.expect(where, `branches[${j}].lse`, c.tensor(where, `branches[${j}].lse`, br.lse), [
          first[0],
          first[1],
          first[2],
          1,
        ]);
      });
      c.define(where, step.out, 'tensor', first);
      if (step.lse !== undefined)
        c.define(where, step.lse, 'tensor', [first[0], first[1], first[2], 1]);
    },
    reads: (step) => step.branches.flatMap((b) => [b.out, b.lse]),
    writes: outAndLse,
  },
  subtract: {
    check(step, where, c) {
      const w = c.tensor(where, 'whole.out', step.whole?.out);
      const rowShape = [w[0], w[1], w[2], 1] as const;
      c.expect(where, 'whole.lse', c.tensor(where, 'whole.lse', step.whole.lse), rowShape);
      c.expect(where, 'part.out', c.tensor(where, 'part.out', step.part?.out), w);
      c.expect(where, 'part.lse', c.tensor(where, 'part.lse', step.part.lse), rowShape);
      c.define(where, step.out, 'tensor', w);
      if (step.lse !== undefined) c.define(where, step.lse, 'tensor', rowShape);
    },
    reads: (step) => [step.whole.out, step.whole.lse, step.part.out, step.part.lse],
    writes: outAndLse,
  },
  gate: {
    check(step, where, c) {
      if (!Array.isArray(step.branches) || step.branches.length < 1)
        throw new SpecError(`${where}: branches must list at least one tensor`);
      const first = c.tensor(where, 'branches[0]', step.branches[0]);
      step.branches.forEach((br: string, j: number) => {
        c.expect(where, `branches[${j}]`, c.tensor(where, `branches[${j}]`, br), first);
      });
      const x = c.tensor(where, 'x', step.x);
      if (x[0] !== first[0] || x[1] !== first[1] || x[2] !== first[2])
        throw new SpecError(
          `${where}: x must have shape [${first[0]}, ${first[1]}, ${first[2]}, cols] (got ${fmt(x)})`,
        );
      const nb = step.branches.length;
      c.expect(where, 'weight', c.tensor(where, 'weight', step.weight), [1, nb, x[1], x[3]]);
      c.expect(where, 'bias', c.tensor(where, 'bias', step.bias), [1, 1, nb, x[1]]);
      c.define(where, step.out, 'tensor', first);
    },
    reads: (step) => [step.x, step.weight, step.bias, ...step.branches],
    writes: (step) => [step.out],
  },
};

const OPS = Object.keys(PROGRAM_STEPS) as StepOp[];

/** The definition of `step`'s kind, typed for it. */
const definitionOf = (step: ProgramStep): StepDefinition<ProgramStep> =>
  PROGRAM_STEPS[step.op] as StepDefinition<ProgramStep>;

/** Checks a program and infers the shape of every value. Throws SpecError naming step and field. */
export function defineProgram(config: ProgramConfig): Program {
  if (typeof config !== 'object' || config === null)
    throw new SpecError('defineProgram needs { inputs, steps, outputs }');
  const c = new StepChecker();
  for (const [name, shape] of Object.entries(config.inputs ?? {})) {
    if (!Array.isArray(shape) || shape.length !== 4)
      throw new SpecError(
        `input '${name}': shape must be [batch, heads, rows, cols] (got ${JSON.stringify(shape)})`,
      );
    shape.forEach((d, i) => {
      posInt(`input '${name}'`, `shape[${i}]`, d);
    });
    c.shapes[name] = Object.freeze([...shape]) as unknown as Shape;
    c.kinds.set(name, 'tensor');
  }
  if (!Array.isArray(config.steps) || config.steps.length === 0)
    throw new SpecError('program needs at least one step');

  config.steps.forEach((step, i) => {
    const where = `step ${i} (${String(step?.op)})`;
    if (typeof step !== 'object' || step === null || !OPS.includes(step.op))
      throw new SpecError(`step ${i}: op must be one of ${OPS.join(', ')}`);
    definitionOf(step).check(step, where, c);
  });

  if (!Array.isArray(config.outputs) || config.outputs.length === 0)
    throw new SpecError('program needs at least one output');
  for (const o of config.outputs) {
    if (c.kinds.get(o) !== 'tensor')
      throw new SpecError(`output '${String(o)}' is not a tensor the program defines`);
  }
  const lastUse = livenessOf(config.steps, new Set(config.outputs));
  return Object.freeze({
    inputs: Object.freeze({ ...config.inputs }),
    steps: Object.freeze([...config.steps]),
    outputs: Object.freeze([...config.outputs]),
    shapes: Object.freeze(c.shapes),
    lastUse,
  });
}

/** Names every step reads. */
export function stepReads(step: ProgramStep): string[] {
  return definitionOf(step).reads(step);
}

/** Names every step writes. */
export function stepWrites(step: ProgramStep): string[] {
  return definitionOf(step).writes(step);
}

function livenessOf(steps: readonly ProgramStep[], keep: ReadonlySet<string>): string[][] {
  const last = new Map<string, number>();
  steps.forEach((s, i) => {
    for (const n of [...stepReads(s), ...stepWrites(s)]) last.set(n, i);
  });
  const out: string[][] = steps.map(() => []);
  for (const [name, i] of last) if (!keep.has(name)) out[i]?.push(name);
  return out;
}
