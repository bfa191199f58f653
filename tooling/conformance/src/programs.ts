// The program half of the catalogue: attention programs (core's defineProgram/runProgram) with
// seeded inputs and a tolerance per case, covering every step kind and the situations the
// backends' hand-built program tests covered. Every backend runs them against cpu.
import {
  type AttentionSpec,
  type CompressedKernel,
  type CompressedStep,
  defineAttention,
  defineProgram,
  type KernelConfig,
  type Mask,
  maskMod,
  type Program,
  type ProgramStep,
  type ScoreMod,
  type Shape,
  scoreMod,
  tensor,
} from '@tessera/core';
import { causal, slidingWindow } from '@tessera/patterns';
import { seededValues, seedOf } from './inputs.js';
import type { Profile } from './types.js';

/**
 * Elementwise bound: `|got − want| ≤ tolerance · (1 + |want|)` for every value of every output;
 * −∞ (the lse of an empty row) must match exactly, and no value may be NaN.
 */
export const PROGRAM_TOLERANCE = Object.freeze({
  /** Softmax steps and everything exact: f32 device sums against f64. */
  f32: 2e-4,
  /** Feature maps (favor+, trig-rf) and programs around them: the device computes φ in f32. */
  features: 1e-3,
  /** bf16 specs: inputs rounded to bf16 on both sides, P rounded before P·V on devices. */
  bf16: 2e-2,
});

/** A selection's entries or a grouping's rank and order, read back from a backend. */
export type DiscreteValue =
  | { readonly kind: 'selection'; readonly rowStart: Int32Array; readonly kvBlocks: Int32Array }
  | { readonly kind: 'grouping'; readonly rank: Int32Array; readonly order: Int32Array };

/** What `build()` makes: the program, its seeded inputs, and how it is compared. */
export interface ProgramCaseBuild {
  readonly program: Program;
  readonly inputs: Readonly<Record<string, Float32Array>>;
  /** See PROGRAM_TOLERANCE. */
  readonly tolerance: number;
  /**
   * Selections and groupings that must equal the reference's exactly (select's top-k with ties
   * to the lower block, group's routing with ties to the lower cluster and (cluster, row) order).
   */
  readonly exact: readonly string[];
  /**
   * The inputs hold −∞ (the lse of empty branches), which runProgram refuses: the steps are run
   * through the backend's ProgramOps directly.
   */
  readonly direct: boolean;
  /**
   * A second program run with values the first kept on the device (`runProgram`'s `keep`):
   * `kept` maps the second program's input names to the first's kept outputs; `inputs` are its
   * host inputs. Every kept name is also an output of the first program.
   */
  readonly next?: {
    readonly program: Program;
    readonly inputs: Readonly<Record<string, Float32Array>>;
    readonly kept: Readonly<Record<string, string>>;
  };
}

export interface ProgramCase {
  /** Stable and unique, e.g. `select/causal/bq16-bk8/top4-local1`; inputs are seeded from it. */
  readonly id: string;
  /** `op:<step>` for every step kind used, `heads:gqa|mha`, `mask:*`, `kernel:*`, `exact`, ... */
  readonly tags: readonly string[];
  /** The shape in words: `B2 H4/2 S45 D8`. */
  readonly summary: string;
  readonly tolerance: number;
  /** The program alone (checked by defineProgram), without seeding inputs. */
  define(): Program;
  build(): ProgramCaseBuild;
}

export interface ProgramCatalogueOptions {
  /** 'ci' (default): seq 45–150, head dim 8–20; 'full': seq 1000, head dim 64 (a GPU's size). */
  readonly profile?: Profile;
  /** Keep only the cases for which this returns true. */
  readonly filter?: (c: ProgramCase) => boolean;
}

/** Sizes of one profile. Blocks scale with the sequence so that block counts stay alike. */
interface Size {
  readonly B: number;
  readonly H: number;
  readonly HK: number;
  /** Main sequence (ragged against every block) and head dim. */
  readonly N: number;
  readonly D: number;
  /** Second sequence and head dim (blocks of 16/32/64, as CUDA's kernels take them). */
  readonly S: number;
  readonly D2: number;
  /** bf16 head dim (not a multiple of 16: the emulated CUDA device has no tensor cores). */
  readonly D16: number;
  /** Multiplier of the small block sizes (4, 8, 16). */
  readonly k: number;
  /** Key counts of the 64×64-selection cases. */
  readonly seqs64: readonly number[];
  readonly topK64: number;
  readonly local64: number;
  /** Rows of the group sort and tie cases; cluster counts. */
  readonly sortRows: number;
  readonly manyClusters: number;
  /** Clusters of the tied sort case with most clusters empty. */
  readonly sortClusters: number;
}

const SIZES: Record<Profile, Size> = {
  ci: {
    B: 2,
    H: 4,
    HK: 2,
    N: 45,
    D: 8,
    S: 75,
    D2: 8,
    D16: 12,
    k: 1,
    seqs64: [75, 96],
    topK64: 1,
    local64: 0,
    sortRows: 300,
    manyClusters: 80,
    sortClusters: 400,
  },
  full: {
    B: 2,
    H: 8,
    HK: 2,
    N: 1000,
    D: 64,
    S: 1000,
    D2: 64,
    D16: 64,
    k: 8,
    seqs64: [1000, 992],
    topK64: 4,
    local64: 1,
    sortRows: 1000,
    manyClusters: 1024,
    sortClusters: 1024,
  },
};

interface Def {
  id: string;
  tags: string[];
  summary: string;
  tolerance: number;
  make: () => {
    inputs: Record<string, Shape>;
    steps: ProgramStep[];
    outputs: string[];
    /** Amplitude of each input's seeded values (default 1). */
    amps?: Record<string, number>;
    /** Changes to the seeded inputs (ties, empty rows, lse edge cases). */
    edit?: (data: Record<string, Float32Array>) => void;
    exact?: string[];
    direct?: boolean;
    next?: { inputs: Record<string, Shape>; steps: ProgramStep[]; outputs: string[] };
    kept?: Record<string, string>;
  };
}

const count = (s: Shape): number => s[0] * s[1] * s[2] * s[3];

function seededData(
  id: string,
  shapes: Record<string, Shape>,
  amps: Record<string, number> = {},
): Record<string, Float32Array> {
  const seed = seedOf(id);
  const data: Record<string, Float32Array> = {};
  Object.entries(shapes).forEach(([name, s], stream) => {
    data[name] = seededValues(count(s), seed, stream, amps[name] ?? 1);
  });
  return data;
}

function toCase(d: Def): ProgramCase {
  return {
    id: d.id,
    tags: Object.freeze([...new Set(d.tags)]) as readonly string[],
    summary: d.summary,
    tolerance: d.tolerance,
    define() {
      const m = d.make();
      return defineProgram({ inputs: m.inputs, steps: m.steps, outputs: m.outputs });
    },
    build() {
      const m = d.make();
      const program = defineProgram({ inputs: m.inputs, steps: m.steps, outputs: m.outputs });
      const inputs = seededData(d.id, m.inputs, m.amps);
      m.edit?.(inputs);
      let next: ProgramCaseBuild['next'];
      if (m.next) {
        const second = defineProgram(m.next);
        const host = Object.fromEntries(
          Object.entries(m.next.inputs).filter(([n]) => !m.kept?.[n]),
        );
        next = {
          program: second,
          inputs: seededData(`${d.id}#next`, host, m.amps),
          kept: m.kept ?? {},
        };
      }
      return {
        program,
        inputs,
        tolerance: d.tolerance,
        exact: m.exact ?? [],
        direct: m.direct ?? false,
        ...(next ? { next } : {}),
      };
    },
  };
}

/** The ops a step list uses, as `op:<kind>` tags (and `grouped` / `selection` for attend). */
function opTags(steps: readonly ProgramStep[]): string[] {
  const tags = steps.map((s) => `op:${s.op}`);
  for (const s of steps) {
    if (s.op === 'attend' && s.selection) tags.push('attend:selection');
    if (s.op === 'attend' && s.groupQ) tags.push('attend:grouped');
    if (s.op === 'compressed' && s.kernel) tags.push(`compressed:${s.kernel.featureMap}`);
    if (s.op === 'compressed' && s.selectionMode) tags.push(`compressed:${s.selectionMode}`);
    if (s.op === 'compressed' && s.skipOwnBlock) tags.push('skip-own-block');
  }
  return tags;
}

/** Causal, with every fifth query row fully masked (empty rows must give 0 and −∞). */
const causalGaps = (): Mask =>
  maskMod(({ q, kv }) => q.mod(5).ne(0).and(q.ge(kv)), { name: 'causal-every-fifth-row-empty' });

/** Ties on purpose: the last centroid of every head repeats the first, so it must stay empty. */
function duplicateLastCentroid(c: Float32Array, heads: number, C: number, D: number): void {
  for (let h = 0; h < heads; h++) c.copyWithin((h * C + C - 1) * D, h * C * D, h * C * D + D);
}

/** The program catalogue, in a stable order. */
export function programCases(options: ProgramCatalogueOptions = {}): ProgramCase[] {
  const profile = options.profile ?? 'ci';
  const z = SIZES[profile];
  const defs: Def[] = [];
  const add = (
    id: string,
    summary: string,
    tolerance: number,
    tags: string[],
    make: Def['make'],
  ): void => {
    defs.push({
      id,
      summary,
      tolerance,
      make,
      tags: [...tags, ...opTags(make().steps)],
    });
  };
  stepCases(add, z);
  attendCases(add, z);
  selectCases(add, z);
  compressedCases(add, z);
  pipelineCases(add, z);
  groupCases(add, z);
  const cases = defs.map(toCase);
  const ids = new Set<string>();
  for (const c of cases) {
    if (ids.has(c.id)) throw new Error(`programCases: duplicate id '${c.id}'`);
    ids.add(c.id);
  }
  return options.filter ? cases.filter(options.filter) : cases;
}

type Add = (id: string, summary: string, tol: number, tags: string[], make: Def['make']) => void;

const words = (B: number, H: number, HK: number, S: number, D: number): string =>
  `B${B} H${H}/${HK} S${S} D${D}`;
const headsTag = (H: number, HK: number): string => (H === HK ? 'heads:mha' : 'heads:gqa');

function spec(
  z: { B: number; H: number },
  HK: number,
  S: number,
  D: number,
  extra: {
    mask?: Mask;
    kernel?: KernelConfig;
    dtype?: 'f32' | 'f16' | 'bf16';
    DV?: number;
    scoreMod?: ScoreMod;
    H?: number;
  } = {},
): AttentionSpec {
  return defineAttention({
    batch: z.B,
    headsQ: extra.H ?? z.H,
    headsKV: HK,
    seqQ: S,
    headDim: D,
    ...(extra.DV !== undefined ? { headDimV: extra.DV } : {}),
    ...(extra.mask ? { mask: extra.mask } : {}),
    ...(extra.kernel ? { kernel: extra.kernel } : {}),
    ...(extra.dtype ? { dtype: extra.dtype } : {}),
    ...(extra.scoreMod ? { scoreMod: extra.scoreMod } : {}),
  });
}

/** pool q and k into summaries, then select blocks of `sp` from them. */
function selectSteps(
  sp: AttentionSpec,
  blockQ: number,
  blockKV: number,
  topK: number,
  local: number,
  withV = false,
): ProgramStep[] {
  return [
    { op: 'pool', out: 'qp', x: 'q', block: blockQ },
    { op: 'pool', out: 'kp', x: 'k', block: blockKV },
    ...(withV ? [{ op: 'pool', out: 'vp', x: 'v', block: blockKV } as const] : []),
    { op: 'select', out: 'sel', q: 'qp', k: 'kp', spec: sp, blockQ, blockKV, topK, local },
  ];
}

// ---- each small step alone ------------------------------------------------------------------

function stepCases(add: Add, z: Size): void {
  const { B, H, HK, N, D } = z;
  const q: Shape = [B, H, N, D];
  const kv: Shape = [B, HK, N, D];
  const sum = words(B, H, HK, N, D);
  const b = 8 * z.k;
  add('pool/mean-and-weighted', `${sum}, blocks ${2 * b}, ${b}, 7 (ragged)`, 2e-4, [], () => ({
    inputs: { q, k: kv, w: [1, HK, 1, b] },
    steps: [
      { op: 'pool', out: 'qm', x: 'q', block: 2 * b },
      { op: 'pool', out: 'km', x: 'k', block: b },
      { op: 'pool', out: 'kw', x: 'k', block: b, weights: 'w' },
      { op: 'pool', out: 'q7', x: 'q', block: 7 },
    ],
    outputs: ['qm', 'km', 'kw', 'q7'],
    amps: { w: 3 },
  }));
  add('project/low-rank', `${sum}, rank 7 and 12`, 2e-4, [], () => ({
    inputs: { q, k: kv, e: [1, 1, 7, N], f: [1, 1, 12, N] },
    steps: [
      { op: 'project', out: 'kp', x: 'k', matrix: 'e' },
      { op: 'project', out: 'qp', x: 'q', matrix: 'f' },
    ],
    outputs: ['kp', 'qp'],
    amps: { e: 0.3, f: 0.3 },
  }));
  add('dense/bias-relu-and-plain', `${sum}, 5 and 24 columns`, 2e-4, [], () => ({
    inputs: { x: q, w: [1, H, D, 5], b: [1, H, 1, 5], w2: [1, H, D, 24] },
    steps: [
      { op: 'dense', out: 'relu', x: 'x', weight: 'w', bias: 'b', activation: 'relu' },
      { op: 'dense', out: 'plain', x: 'x', weight: 'w' },
      { op: 'dense', out: 'wide', x: 'x', weight: 'w2', activation: 'none' },
    ],
    outputs: ['relu', 'plain', 'wide'],
  }));
  const o6: Shape = [B, H, N, 6];
  add('gate/three-branches', `${sum}, 6 columns`, 2e-4, [], () => ({
    inputs: { x: q, w: [1, 3, H, D], b: [1, 1, 3, H], o0: o6, o1: o6, o2: o6 },
    steps: [{ op: 'gate', out: 'g', x: 'x', weight: 'w', bias: 'b', branches: ['o0', 'o1', 'o2'] }],
    outputs: ['g'],
    amps: { w: 2, b: 4 },
  }));
  const lse: Shape = [B, H, N, 1];
  add('merge/three-branches', sum, 2e-4, [], () => ({
    inputs: { a: q, la: lse, b: q, lb: lse, c: q, lc: lse },
    steps: [
      {
        op: 'merge',
        out: 'm',
        lse: 'lm',
        branches: [
          { out: 'a', lse: 'la' },
          { out: 'b', lse: 'lb' },
          { out: 'c', lse: 'lc' },
        ],
      },
    ],
    outputs: ['m', 'lm'],
    amps: { la: 4, lb: 4, lc: 4 },
  }));
  // Causal compressed branches: queries of the first block see no summary (−∞); with blocks of
  // b against 2b one branch is empty where the other is not.
  const nb = Math.ceil(N / b);
  const nb2 = Math.ceil(N / (2 * b));
  add(
    'merge/empty-rows',
    `${sum}, causal compressed branches of blocks ${b} and ${2 * b}`,
    2e-4,
    ['empty-rows'],
    () => ({
      inputs: { q, k: [B, HK, nb, D], v: [B, HK, nb, D], k2: [B, HK, nb2, D], v2: [B, HK, nb2, D] },
      steps: [
        compressedOf('a', 'la', 'k', 'v', b, N, true, 0.35),
        compressedOf('c', 'lc', 'k2', 'v2', 2 * b, N, true, 0.35),
        {
          op: 'merge',
          out: 'm',
          lse: 'lm',
          branches: [
            { out: 'a', lse: 'la' },
            { out: 'c', lse: 'lc' },
          ],
        },
      ],
      outputs: ['m', 'lm', 'lc'],
    }),
  );
  // Rows by r % 6: a normal part (t < 1), an empty part (−∞), part = whole (t = 1), a part above
  // the whole (t > 1), a vanishing part (t = e^-100) and an empty whole (and part).
  add(
    'subtract/edge-rows',
    `${sum}: t < 1, empty part, t = 1, t > 1, t = e^-100, empty whole`,
    2e-4,
    ['empty-rows', 'direct'],
    () => ({
      inputs: { ow: q, lw: lse, op: q, lp: lse },
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
      amps: { lw: 3 },
      direct: true,
      edit: (x) => {
        const lw = x.lw as Float32Array;
        const lp = x.lp as Float32Array;
        const u = seededValues(lw.length, seedOf('subtract/edge-rows#gap'), 0);
        for (let r = 0; r < lw.length; r++) {
          const l = lw[r] as number;
          const g = Math.abs(u[r] as number);
          const kind = r % 6;
          lp[r] = [l - 0.05 - 2 * g, Number.NEGATIVE_INFINITY, l, l + 0.5 + g, l - 100, 0][
            kind
          ] as number;
          if (kind === 5) {
            lw[r] = Number.NEGATIVE_INFINITY;
            lp[r] = Number.NEGATIVE_INFINITY;
          }
        }
      },
    }),
  );
  // Values kept on the device across runs: a pooled compression reused by a second program.
  const nk = Math.ceil(N / b);
  add('keep/pooled-keys-reused', `${sum}, pool ${b} kept, pooled again`, 2e-4, ['keep'], () => ({
    inputs: { k: kv, v: kv },
    steps: [
      { op: 'pool', out: 'kp', x: 'k', block: b },
      { op: 'pool', out: 'vp', x: 'v', block: b },
    ],
    outputs: ['kp', 'vp'],
    next: {
      inputs: { kp: [B, HK, nk, D], vp: [B, HK, nk, D], q, w: [1, HK, 1, 3] },
      steps: [
        { op: 'pool', out: 'kpp', x: 'kp', block: 3, weights: 'w' },
        compressedOf('c', 'lc', 'kp', 'vp', b, N, true, 0.5),
      ],
      outputs: ['kpp', 'c', 'lc'],
    },
    kept: { kp: 'kp', vp: 'vp' },
  }));
}

function compressedOf(
  out: string,
  lse: string,
  k: string,
  v: string,
  block: number,
  seqKV: number,
  isCausal: boolean,
  scale: number,
  extra: Partial<CompressedStep> = {},
): CompressedStep {
  return {
    op: 'compressed',
    out,
    lse,
    q: 'q',
    k,
    v,
    block,
    seqKV,
    causal: isCausal,
    scale,
    ...extra,
  };
}

// ---- attend without selection or grouping ------------------------------------------------------

function attendCases(add: Add, z: Size): void {
  const { B, H, HK, N, D, S } = z;
  const attendOnly = (sp: AttentionSpec, amp = 1): ReturnType<Def['make']> => ({
    inputs: {
      q: [B, sp.headsQ, sp.seqQ, sp.headDim],
      k: [B, sp.headsKV, sp.seqKV, sp.headDim],
      v: [B, sp.headsKV, sp.seqKV, sp.headDimV],
    },
    steps: [{ op: 'attend', out: 'o', lse: 'l', spec: sp, q: 'q', k: 'k', v: 'v' }],
    outputs: ['o', 'l'],
    amps: { q: amp, k: amp },
  });
  const sum = words(B, H, HK, N, D);
  add('attend/softmax/causal', sum, 2e-4, ['mask:causal', 'heads:gqa'], () =>
    attendOnly(spec(z, HK, N, D, { mask: causal() })),
  );
  add('attend/softmax/none', sum, 2e-4, ['mask:none', 'heads:gqa'], () =>
    attendOnly(spec(z, HK, N, D)),
  );
  add(
    'attend/softmax/causal-gaps',
    `${words(B, H, HK, S, z.D2)}, every fifth row empty`,
    2e-4,
    ['mask:causal-gaps', 'heads:gqa', 'empty-rows'],
    () => attendOnly(spec(z, HK, S, z.D2, { mask: causalGaps() }), 2),
  );
  for (const isCausal of [true, false])
    add(
      `attend/elu+1/${isCausal ? 'causal' : 'none'}`,
      sum,
      1e-3,
      [`mask:${isCausal ? 'causal' : 'none'}`, 'heads:gqa', 'kernel:elu+1'],
      () =>
        attendOnly(
          spec(z, HK, N, D, {
            kernel: { type: 'linear', featureMap: 'elu+1' },
            ...(isCausal ? { mask: causal() } : {}),
          }),
        ),
    );
  for (const isCausal of [true, false])
    add(
      `attend/bf16/${isCausal ? 'causal-gaps' : 'none'}`,
      words(B, H, HK, S, z.D16),
      PROGRAM_TOLERANCE.bf16,
      [
        'cuda-paths',
        'dtype:bf16',
        'heads:gqa',
        `mask:${isCausal ? 'causal-gaps' : 'none'}`,
        ...(isCausal ? ['empty-rows'] : []),
      ],
      () =>
        attendOnly(
          spec(z, HK, S, z.D16, { dtype: 'bf16', ...(isCausal ? { mask: causalGaps() } : {}) }),
          2,
        ),
    );
}

// ---- select, and attend on selections --------------------------------------------------------

function selectCases(add: Add, z: Size): void {
  const { B, H, HK, N, D, k: m } = z;
  const q: Shape = [B, H, N, D];
  const kv: Shape = [B, HK, N, D];
  const sum = words(B, H, HK, N, D);
  // pool → select → attend(selection): the selection exactly, and out/lse.
  const pooled: [string, () => AttentionSpec, string, number, number, number, number][] = [
    ['causal', () => spec(z, HK, N, D, { mask: causal() }), 'mask:causal', 16, 8, 4, 1],
    ['none', () => spec(z, HK, N, D), 'mask:none', 8, 8, 3, 0],
    [
      'window20',
      () => spec(z, HK, N, D, { mask: slidingWindow(20 * m, { causal: true }) }),
      'mask:window',
      8,
      4,
      5,
      2,
    ],
    ['causal', () => spec(z, HK, N, D, { mask: causal() }), 'mask:causal', 4, 16, 2, 1],
    ['none', () => spec(z, HK, N, D), 'mask:none', 8, 16, 2, 0],
  ];
  for (const [name, sp, tag, bq0, bk0, topK, local] of pooled) {
    const [bq, bk] = [bq0 * m, bk0 * m];
    add(
      `select/${name}/bq${bq}-bk${bk}/top${topK}-local${local}`,
      `${sum}, pooled summaries`,
      2e-4,
      [tag, 'heads:gqa', 'exact'],
      () => {
        const s = sp();
        return {
          inputs: { q, k: kv, v: kv },
          steps: [
            ...selectSteps(s, bq, bk, topK, local),
            { op: 'attend', out: 'o', lse: 'l', spec: s, q: 'q', k: 'k', v: 'v', selection: 'sel' },
          ],
          outputs: ['o', 'l'],
          exact: ['sel'],
        };
      },
    );
  }
  // Ties: in batch 0 every key summary of a head is the same, so every unforced candidate ties
  // and the lower blocks must win; batch 1 is random.
  {
    const R = z.sortRows;
    const [bq, bk] = [16 * m, 32 * m];
    const [nq, nk] = [Math.ceil(R / bq), Math.ceil(R / bk)];
    add(
      `select/ties/bq${bq}-bk${bk}/top3-local1`,
      `${words(B, H, HK, R, D)}, summaries as inputs, batch 0 all tied`,
      2e-4,
      ['mask:causal', 'heads:gqa', 'exact', 'ties'],
      () => {
        const s = spec(z, HK, R, D, { mask: causal() });
        return {
          inputs: {
            qp: [B, H, nq, D],
            kp: [B, HK, nk, D],
          },
          steps: [
            {
              op: 'select',
              out: 'sel',
              q: 'qp',
              k: 'kp',
              spec: s,
              blockQ: bq,
              blockKV: bk,
              topK: 3,
              local: 1,
            },
          ],
          outputs: ['qp'],
          amps: { qp: 2, kp: 2 },
          exact: ['sel'],
          edit: (x) => {
            const kp = x.kp as Float32Array;
            for (let hk = 0; hk < HK; hk++)
              for (let j = 1; j < nk; j++)
                kp.copyWithin((hk * nk + j) * D, hk * nk * D, (hk * nk + 1) * D);
          },
        };
      },
    );
  }
  // Selections of small blocks (CUDA walks them with its per-row kernel; webgpu with tiles), on
  // random summaries given as inputs: ragged, GQA, blockQ ≠ blockKV, rows the mask empties, a
  // window, and a captured-tensor mask with a captured-tensor score modification.
  const small: {
    name: string;
    S: number;
    bq: number;
    bkv: number;
    topK: number;
    local: number;
    H?: number;
    HK?: number;
    DV?: number;
    mask?: () => Mask;
    scoreMod?: (heads: number) => ScoreMod;
    tags: string[];
  }[] = [
    {
      name: '4x4/causal',
      S: 45,
      bq: 4,
      bkv: 4,
      topK: 3,
      local: 1,
      mask: causal,
      tags: ['mask:causal'],
    },
    { name: '8x8/none', S: 45, bq: 8, bkv: 8, topK: 2, local: 0, tags: ['mask:none'] },
    {
      name: '8x8/causal-dv40',
      S: 45,
      bq: 8,
      bkv: 8,
      topK: 3,
      local: 1,
      DV: 40,
      mask: causal,
      tags: ['mask:causal', 'dv≠d'],
    },
    {
      name: '8x4/causal',
      S: 45,
      bq: 8,
      bkv: 4,
      topK: 4,
      local: 1,
      mask: causal,
      tags: ['mask:causal'],
    },
    { name: '4x8/none', S: 45, bq: 4, bkv: 8, topK: 2, local: 0, tags: ['mask:none'] },
    {
      name: '16x48/causal',
      S: 100,
      bq: 16,
      bkv: 48,
      topK: 2,
      local: 1,
      mask: causal,
      tags: ['mask:causal'],
    },
    {
      name: '16x16/none-mha',
      S: 64,
      bq: 16,
      bkv: 16,
      topK: 1,
      local: 0,
      H: 2,
      HK: 2,
      tags: ['mask:none'],
    },
    {
      name: '8x8/earlier-blocks',
      S: 45,
      bq: 8,
      bkv: 8,
      topK: 2,
      local: 0,
      mask: () => maskMod(({ q, kv }) => kv.lt(q.div(8).mul(8)), { name: 'earlier-blocks(8)' }),
      tags: ['mask:earlier-blocks', 'empty-rows'],
    },
    {
      name: '4x4/window6',
      S: 45,
      bq: 4,
      bkv: 4,
      topK: 2,
      local: 1,
      mask: () => maskMod(({ q, kv }) => q.ge(kv).and(q.sub(kv).lt(6)), { name: 'window-6' }),
      tags: ['mask:window'],
    },
    {
      name: '4x4/documents-alibi',
      S: 45,
      bq: 4,
      bkv: 4,
      topK: 3,
      local: 1,
      mask: () => {
        const docs = tensor(Int32Array.from({ length: 45 }, (_, i) => Math.floor(i / 13)));
        return maskMod(({ q, kv }) => docs.at(q).eq(docs.at(kv)).and(q.ge(kv)), { name: 'doc' });
      },
      scoreMod: (heads) => {
        const slopes = tensor(Float32Array.from({ length: heads }, (_, h) => 2 ** -(h + 1)));
        return scoreMod(({ score, h, q, kv }) => score.sub(slopes.at(h).mul(q.sub(kv).toFloat())), {
          name: 'alibi',
        });
      },
      tags: ['mask:documents', 'mod:alibi', 'tensor'],
    },
  ];
  for (const c of small) {
    const h = c.H ?? H;
    const hk = c.HK ?? HK;
    const dv = c.DV ?? D;
    const nq = Math.ceil(c.S / c.bq);
    const nk = Math.ceil(c.S / c.bkv);
    add(
      `select-attend/${c.name}`,
      `B${B} H${h}/${hk} S${c.S} D${D}${dv !== D ? `/${dv}` : ''}, blocks ${c.bq}×${c.bkv}, top ${c.topK}, local ${c.local}`,
      2e-4,
      [...c.tags, headsTag(h, hk), 'exact', 'small-blocks'],
      () => {
        const s = spec(z, hk, c.S, D, {
          H: h,
          DV: dv,
          ...(c.mask ? { mask: c.mask() } : {}),
          ...(c.scoreMod ? { scoreMod: c.scoreMod(h) } : {}),
        });
        return {
          inputs: {
            q: [B, h, c.S, D],
            k: [B, hk, c.S, D],
            v: [B, hk, c.S, dv],
            qp: [B, h, nq, D],
            kp: [B, hk, nk, D],
          },
          steps: [
            {
              op: 'select',
              out: 'sel',
              q: 'qp',
              k: 'kp',
              spec: s,
              blockQ: c.bq,
              blockKV: c.bkv,
              topK: c.topK,
              local: c.local,
            },
            { op: 'attend', out: 'o', lse: 'l', spec: s, q: 'q', k: 'k', v: 'v', selection: 'sel' },
          ],
          outputs: ['o', 'l'],
          amps: { q: 2, k: 2 },
          exact: ['sel'],
        };
      },
    );
  }
}

// ---- compressed ------------------------------------------------------------------------------

function compressedCases(add: Add, z: Size): void {
  const { B, H, HK, N, D, k: m } = z;
  const q: Shape = [B, H, N, D];
  const kv: Shape = [B, HK, N, D];
  const sum = words(B, H, HK, N, D);
  const pooledKV = (block: number): ProgramStep[] => [
    { op: 'pool', out: 'kp', x: 'k', block },
    { op: 'pool', out: 'vp', x: 'v', block },
  ];
  const amps = { q: 2, k: 2 };
  // Feature maps and softmax, causal (skipOwnBlock on half: it changes nothing there) and
  // bidirectional with skipOwnBlock; blocks 8 and 16 are both ragged against the sequence.
  const kernels: [string, CompressedKernel | undefined, number][] = [
    ['softmax', undefined, 8],
    ['favor+32', { featureMap: 'favor+', features: 32, seed: 7 }, 8],
    ['favor+64', { featureMap: 'favor+', features: 64, seed: 3 }, 16],
    ['elu+1', { featureMap: 'elu+1' }, 8],
    ['relu', { featureMap: 'relu' }, 16],
  ];
  kernels.forEach(([name, kernel, block0], index) => {
    const block = block0 * m;
    const tol = kernel?.featureMap === 'favor+' ? PROGRAM_TOLERANCE.features : 2e-4;
    const kTag = `kernel:${kernel?.featureMap ?? 'softmax'}`;
    for (const [isCausal, skip] of [
      [true, index % 2 === 1],
      [false, true],
      ...(kernel ? [] : [[false, false] as const]),
    ] as const) {
      add(
        `compressed/${name}/${isCausal ? 'causal' : 'none'}${skip ? '-skip-own' : ''}/block${block}`,
        sum,
        tol,
        [
          kTag,
          `mask:${isCausal ? 'causal' : 'none'}`,
          'heads:gqa',
          ...(isCausal ? ['empty-rows'] : []),
        ],
        () => ({
          inputs: { q, k: kv, v: kv },
          steps: [
            ...pooledKV(block),
            compressedOf('o', 'l', 'kp', 'vp', block, N, isCausal, 0.5, {
              ...(skip ? { skipOwnBlock: true } : {}),
              ...(kernel ? { kernel } : {}),
            }),
          ],
          outputs: ['o', 'l'],
          amps,
        }),
      );
    }
  });
  // Rows whose query is ≤ 0 everywhere have no relu mass: out 0, lse −∞.
  add(
    'compressed/relu/no-mass-rows',
    `${sum}, every fifth query row non-positive`,
    2e-4,
    ['kernel:relu', 'mask:none', 'empty-rows'],
    () => ({
      inputs: { q, k: kv, v: kv },
      steps: [
        ...pooledKV(8 * m),
        compressedOf('o', 'l', 'kp', 'vp', 8 * m, N, false, 0.5, {
          skipOwnBlock: true,
          kernel: { featureMap: 'relu' },
        }),
      ],
      outputs: ['o', 'l'],
      amps,
      edit: (x) => {
        const qq = x.q as Float32Array;
        for (let r = 0; r < B * H * N; r += 5)
          for (let d = 0; d < D; d++) qq[r * D + d] = -Math.abs(qq[r * D + d] as number);
      },
    }),
  );
  // With a selection: 'exclude' and 'only', causal and not.
  for (const mode of ['exclude', 'only'] as const) {
    for (const isCausal of [true, false]) {
      add(
        `compressed/softmax/${mode}/${isCausal ? 'causal' : 'none'}`,
        `${sum}, select ${16 * m}×${8 * m} top 3`,
        2e-4,
        ['kernel:softmax', `mask:${isCausal ? 'causal' : 'none'}`, 'heads:gqa', 'exact'],
        () => {
          const s = spec(z, HK, N, D, isCausal ? { mask: causal() } : {});
          return {
            inputs: { q, k: kv, v: kv },
            steps: [
              ...selectSteps(s, 16 * m, 8 * m, 3, isCausal ? 1 : 0, true),
              compressedOf('o', 'l', 'kp', 'vp', 8 * m, N, isCausal, 0.5, {
                selection: 'sel',
                selectionMode: mode,
              }),
            ],
            outputs: ['o', 'l'],
            amps,
            exact: ['sel'],
          };
        },
      );
    }
  }
  add(
    'compressed/favor+default/exclude/causal',
    `${sum}, 256 features, seed 0, select ${16 * m}×${8 * m} top 3`,
    PROGRAM_TOLERANCE.features,
    ['kernel:favor+', 'mask:causal', 'heads:gqa'],
    () => {
      const s = spec(z, HK, N, D, { mask: causal() });
      return {
        inputs: { q, k: kv, v: kv },
        steps: [
          ...selectSteps(s, 16 * m, 8 * m, 3, 1, true),
          compressedOf('o', 'l', 'kp', 'vp', 8 * m, N, true, 0.5, {
            selection: 'sel',
            selectionMode: 'exclude',
            kernel: { featureMap: 'favor+' },
          }),
        ],
        outputs: ['o', 'l'],
        amps,
      };
    },
  );
  {
    const blk = 16 * m;
    add(
      'compressed/favor+32/exclude/none-skip-own',
      `${sum}, select ${blk}×${blk} top 2`,
      PROGRAM_TOLERANCE.features,
      ['kernel:favor+', 'mask:none', 'heads:gqa'],
      () => {
        const s = spec(z, HK, N, D);
        return {
          inputs: { q, k: kv, v: kv },
          steps: [
            ...selectSteps(s, blk, blk, 2, 0, true),
            compressedOf('o', 'l', 'kp', 'vp', blk, N, false, 1 / Math.sqrt(D), {
              skipOwnBlock: true,
              kernel: { featureMap: 'favor+', features: 32 },
              selection: 'sel',
              selectionMode: 'exclude',
            }),
          ],
          outputs: ['o', 'l'],
          amps,
        };
      },
    );
  }
}

// ---- whole programs: pool → select → attend(selection) + compressed → merge; gate --------------

function pipelineCases(add: Add, z: Size): void {
  const { B, H, HK, S, D2, D16, k: m } = z;
  const branches = (
    mode: 'exclude' | 'only',
    sp: AttentionSpec,
    bq: number,
    bkv: number,
    topK: number,
    local: number,
    seq: number,
    isCausal: boolean,
  ): ProgramStep[] => [
    ...selectSteps(sp, bq, bkv, topK, local, true),
    { op: 'attend', out: 'o1', lse: 'l1', spec: sp, q: 'q', k: 'k', v: 'v', selection: 'sel' },
    compressedOf('o2', 'l2', 'kp', 'vp', bkv, seq, isCausal, sp.scale, {
      selection: 'sel',
      selectionMode: mode,
    }),
  ];
  const merge: ProgramStep = {
    op: 'merge',
    out: 'o',
    lse: 'l',
    branches: [
      { out: 'o1', lse: 'l1' },
      { out: 'o2', lse: 'l2' },
    ],
  };
  for (const dtype of ['f32', 'bf16'] as const) {
    for (const isCausal of [true, false]) {
      const d = dtype === 'f32' ? D2 : D16;
      const [bq, bkv, topK] =
        z === SIZES.full && dtype === 'bf16' ? [64, 64, 4] : [16 * m, 32 * m, 2];
      const mtag = isCausal ? 'causal-gaps' : 'none';
      const tol = dtype === 'f32' ? 2e-4 : PROGRAM_TOLERANCE.bf16;
      const tags = [
        ...(dtype === 'f32' && isCausal ? [] : ['cuda-paths']),
        `mask:${mtag}`,
        `dtype:${dtype}`,
        'heads:gqa',
        ...(isCausal ? ['empty-rows'] : []),
      ];
      const mk = () => spec(z, HK, S, d, { dtype, ...(isCausal ? { mask: causalGaps() } : {}) });
      const kv: Shape = [B, HK, S, d];
      add(
        `program/select-merge-gate/${dtype}/${mtag}`,
        `${words(B, H, HK, S, d)}, select ${bq}×${bkv} top ${topK} local 1`,
        tol,
        tags,
        () => ({
          inputs: { q: [B, H, S, d], k: kv, v: kv, gw: [1, 2, H, d], gb: [1, 1, 2, H] },
          steps: [
            ...branches('exclude', mk(), bq, bkv, topK, 1, S, isCausal),
            merge,
            { op: 'gate', out: 'g', x: 'q', weight: 'gw', bias: 'gb', branches: ['o1', 'o2'] },
          ],
          outputs: ['o', 'l', 'g', 'l1'],
          amps: { q: 2, k: 2 },
        }),
      );
      if (dtype === 'f32')
        add(
          `program/select-only/${dtype}/${mtag}`,
          `${words(B, H, HK, S, d)}, select ${bq}×${bkv} top ${topK} local 1`,
          tol,
          tags,
          () => ({
            inputs: { q: [B, H, S, d], k: kv, v: kv },
            steps: branches('only', mk(), bq, bkv, topK, 1, S, isCausal),
            outputs: ['o2', 'l2'],
            amps: { q: 2, k: 2 },
          }),
        );
    }
  }
  // Selections of 64×64 blocks (the standard systems' blocks): a ragged last 32-key block, and a
  // key count that is a multiple of 32 but not of 64 (the last block's second half lies past the
  // keys). Selections of 8×8 blocks, merged with the compressed remainder.
  const blocks: [number, number, number, number][] = [
    ...z.seqs64.map(
      (seq) =>
        [seq, 64, Math.min(Math.ceil(seq / 64) - 1, z.topK64), z.local64] as [
          number,
          number,
          number,
          number,
        ],
    ),
    [S, 8, z === SIZES.full ? 16 : 3, z === SIZES.full ? 2 : 1],
  ];
  for (const [seq, blk, topK, local] of blocks) {
    for (const isCausal of blk === 8 ? [true] : [true, false]) {
      const mtag = isCausal ? 'causal-gaps' : 'none';
      const kv: Shape = [B, HK, seq, D2];
      add(
        `program/select-${blk}x${blk}-merge/S${seq}/${mtag}`,
        `${words(B, H, HK, seq, D2)}, top ${topK} local ${local}`,
        2e-4,
        ['cuda-paths', `mask:${mtag}`, 'heads:gqa', ...(isCausal ? ['empty-rows'] : [])],
        () => ({
          inputs: { q: [B, H, seq, D2], k: kv, v: kv },
          steps: [
            ...branches(
              'exclude',
              spec(z, HK, seq, D2, isCausal ? { mask: causalGaps() } : {}),
              blk,
              blk,
              topK,
              local,
              seq,
              isCausal,
            ),
            merge,
          ],
          outputs: ['o1', 'l1', 'o', 'l'],
          amps: { q: 2, k: 2 },
        }),
      );
    }
  }
  // f16/bf16 specs round q, k, v as the cpu does, with and without a selection.
  const { N, D } = z;
  for (const dtype of ['f16', 'bf16'] as const) {
    add(
      `program/${dtype}/attend-with-and-without-selection`,
      `${words(B, H, HK, N, D)}, select ${16 * m}×${8 * m} top 3`,
      PROGRAM_TOLERANCE.bf16,
      [`dtype:${dtype}`, 'mask:causal', 'heads:gqa'],
      () => {
        const s = spec(z, HK, N, D, { dtype, mask: causal() });
        return {
          inputs: { q: [B, H, N, D], k: [B, HK, N, D], v: [B, HK, N, D] },
          steps: [
            ...selectSteps(s, 16 * m, 8 * m, 3, 1),
            { op: 'attend', out: 'o', lse: 'l', spec: s, q: 'q', k: 'k', v: 'v' },
            {
              op: 'attend',
              out: 'os',
              lse: 'ls',
              spec: s,
              q: 'q',
              k: 'k',
              v: 'v',
              selection: 'sel',
            },
          ],
          outputs: ['o', 'l', 'os', 'ls'],
          amps: { q: 2, k: 2 },
        };
      },
    );
  }
}

// ---- group, grouped attend, subtract -----------------------------------------------------------

function groupCases(add: Add, z: Size): void {
  const { B, H, HK, N, D } = z;
  const q: Shape = [B, H, N, D];
  const amps = { q: 2, k: 2 };
  const kernelOf = (name: string): KernelConfig | undefined =>
    name === 'softmax'
      ? undefined
      : name === 'favor+64'
        ? { type: 'linear', featureMap: 'favor+', features: 64, seed: 5 }
        : name === 'trig-rf64'
          ? { type: 'linear', featureMap: 'trig-rf', features: 64, seed: 2 }
          : { type: 'linear', featureMap: name as 'elu+1' | 'relu' };
  const tolOf = (name: string): number =>
    name === 'favor+64' || name === 'trig-rf64' ? PROGRAM_TOLERANCE.features : 2e-4;
  // Each side grouped on its own rows, or one grouping (of the keys) passed to both.
  // [kernel, causal, KV heads, size, clusters, shared]
  const cases: [string, boolean, number, number, number, boolean][] = [
    ['softmax', true, HK, 6, 5, false],
    ['softmax', true, HK, 1, 5, false],
    ['softmax', true, HK, N, 5, false],
    ['softmax', false, HK, 6, 5, false],
    ['softmax', false, HK, 1, 5, false],
    ['softmax', false, HK, N, 5, false],
    ['softmax', false, HK, 16, 12, false],
    ['softmax', true, H, 1, 5, true],
    ['softmax', false, H, N, 3, false],
    ['softmax', true, H, 6, z.manyClusters, true],
    ['softmax', true, HK, 6, 5, true],
    ['softmax', false, HK, 6, 5, true],
    ['elu+1', true, HK, 6, 5, true],
    ['elu+1', false, H, 6, 5, true],
    ['favor+64', true, HK, 8, 4, false],
    ['elu+1', false, HK, 8, 4, false],
    ['relu', true, HK, 8, 4, false],
    ['trig-rf64', false, HK, 8, 4, false],
  ];
  for (const [kname, isCausal, hk, size, C, shared] of cases) {
    const kernel = kernelOf(kname);
    const kv: Shape = [B, hk, N, D];
    add(
      `group/${kname}/${isCausal ? 'causal' : 'none'}/${hk === H ? 'mha' : 'gqa'}/size${size}-c${C}${shared ? '-shared' : ''}`,
      `${words(B, H, hk, N, D)}, groups of ${size}, ${C} clusters${shared ? ', one grouping of the keys for both' : ''}`,
      tolOf(kname),
      [
        `kernel:${kname.replace(/\d+$/, '')}`,
        `mask:${isCausal ? 'causal' : 'none'}`,
        headsTag(H, hk),
        'exact',
        ...(shared ? ['grouping:shared'] : []),
      ],
      () => {
        const s = spec(z, hk, N, D, {
          ...(isCausal ? { mask: causal() } : {}),
          ...(kernel ? { kernel } : {}),
        });
        const groupQ = shared ? 'gk' : 'gq';
        return {
          inputs: {
            q,
            k: kv,
            v: kv,
            ...(shared ? {} : { cq: [1, H, C, D] as Shape }),
            ck: [1, hk, C, D],
          },
          steps: [
            ...(shared ? [] : [{ op: 'group', out: 'gq', x: 'q', centroids: 'cq', size } as const]),
            { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size },
            {
              op: 'attend',
              out: 'o',
              lse: 'l',
              spec: s,
              q: 'q',
              k: 'k',
              v: 'v',
              groupQ,
              groupKV: 'gk',
            },
          ],
          outputs: ['o', 'l'],
          amps: kernel === undefined ? amps : {},
          exact: shared ? ['gk'] : ['gq', 'gk'],
          edit: (x) => {
            if (!shared) duplicateLastCentroid(x.cq as Float32Array, H, C, D);
            duplicateLastCentroid(x.ck as Float32Array, hk, C, D);
          },
        };
      },
    );
  }
  // The grouping alone: the sort over several tiles of rows, and ties (rows 0..9 of every slice
  // copy row 10, so equal rows must keep row order), with few clusters and with many (most empty).
  const R = z.sortRows;
  for (const [C, tied] of [
    [7, false],
    [5, true],
    [z.sortClusters, true],
  ] as const) {
    const size = tied ? 7 : 10;
    add(
      `group/sort/rows${R}-c${C}${tied ? '-ties' : ''}`,
      `B${B} H3 S${R} D8, groups of ${size}`,
      2e-4,
      ['exact', ...(tied ? ['ties'] : [])],
      () => ({
        inputs: { x: [B, 3, R, 8], c: [1, 3, C, 8] },
        steps: [{ op: 'group', out: 'g', x: 'x', centroids: 'c', size }],
        outputs: ['x'],
        exact: ['g'],
        edit: (data) => {
          if (!tied) return;
          const x = data.x as Float32Array;
          for (let s = 0; s < B * 3; s++)
            for (let t = 0; t < 10; t++)
              x.copyWithin((s * R + t) * 8, (s * R + 10) * 8, (s * R + 11) * 8);
        },
      }),
    );
  }
  // Kernel attention outside the group: whole − part by subtract.
  const favor = kernelOf('favor+64') as KernelConfig;
  add(
    'group/favor+64/subtract/causal/gqa',
    `${words(B, H, HK, N, D)}, groups of 6, 5 clusters`,
    2e-3,
    ['kernel:favor+', 'mask:causal', 'heads:gqa', 'exact'],
    () => {
      const s = spec(z, HK, N, D, { mask: causal(), kernel: favor });
      return {
        inputs: { q, k: [B, HK, N, D], v: [B, HK, N, D], cq: [1, H, 5, D], ck: [1, HK, 5, D] },
        steps: [
          { op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 6 },
          { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: 6 },
          { op: 'attend', out: 'w', lse: 'lw', spec: s, q: 'q', k: 'k', v: 'v' },
          {
            op: 'attend',
            out: 'p',
            lse: 'lp',
            spec: s,
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
        exact: ['gq', 'gk'],
      };
    },
  );
  // Linearized Grouped Attention: exact softmax inside each group + a favor+ estimate of the rest
  // (all visible keys less the group's), merged exactly. MHA with one grouping of the keys, causal
  // and not; GQA with a grouping per side, causal.
  for (const [isCausal, hk, shared] of [
    [true, H, true],
    [false, H, true],
    [true, HK, false],
  ] as const) {
    add(
      `program/lga/${isCausal ? 'causal' : 'none'}/${hk === H ? 'mha' : 'gqa'}`,
      `${words(B, H, hk, N, D)}, groups of 8, 4 clusters`,
      PROGRAM_TOLERANCE.features,
      ['kernel:favor+', `mask:${isCausal ? 'causal' : 'none'}`, headsTag(H, hk)],
      () => {
        const exact = spec(z, hk, N, D, isCausal ? { mask: causal() } : {});
        const lin = spec(z, hk, N, D, { kernel: favor, ...(isCausal ? { mask: causal() } : {}) });
        const gq = shared ? 'gk' : 'gq';
        const kv: Shape = [B, hk, N, D];
        return {
          inputs: {
            q,
            k: kv,
            v: kv,
            ...(shared ? {} : { cq: [1, H, 4, D] as Shape }),
            ck: [1, hk, 4, D],
          },
          steps: [
            ...(shared
              ? []
              : [{ op: 'group', out: 'gq', x: 'q', centroids: 'cq', size: 8 } as const]),
            { op: 'group', out: 'gk', x: 'k', centroids: 'ck', size: 8 },
            {
              op: 'attend',
              out: 'o1',
              lse: 'l1',
              spec: exact,
              q: 'q',
              k: 'k',
              v: 'v',
              groupQ: gq,
              groupKV: 'gk',
            },
            { op: 'attend', out: 'ow', lse: 'lw', spec: lin, q: 'q', k: 'k', v: 'v' },
            {
              op: 'attend',
              out: 'op',
              lse: 'lp',
              spec: lin,
              q: 'q',
              k: 'k',
              v: 'v',
              groupQ: gq,
              groupKV: 'gk',
            },
            {
              op: 'subtract',
              out: 'o2',
              lse: 'l2',
              whole: { out: 'ow', lse: 'lw' },
              part: { out: 'op', lse: 'lp' },
            },
            {
              op: 'merge',
              out: 'o',
              lse: 'l',
              branches: [
                { out: 'o1', lse: 'l1' },
                { out: 'o2', lse: 'l2' },
              ],
            },
          ],
          // o2 alone is ill-conditioned where the group holds nearly every visible key (t → 1);
          // merged it weighs e^{l2}, which brings it back to e^{lw}(o_w − t·o_p).
          outputs: ['o', 'l', 'o1', 'l1', 'op', 'lp'],
        };
      },
    );
  }
}
