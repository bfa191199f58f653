import {
  type AttentionConfig,
  type AttentionSpec,
  type Dtype,
  defineAttention,
  maskMod,
  scoreMod,
  tensor,
} from '@tessera/core';
import { formatSeq } from './units.js';

export const SUITES = ['dense', 'causal', 'patterns', 'linear', 'variants'] as const;
export type SuiteName = (typeof SUITES)[number];

/** How a peer (PyTorch SDPA / FlexAttention) expresses the same computation; null where it cannot. */
export type PeerMask =
  | { kind: 'dense' }
  | { kind: 'causal' }
  /** Causal with ALiBi slopes captured as a tensor (FlexAttention: a score_mod over `slopes`). */
  | { kind: 'causal-alibi'; slopes: readonly number[] }
  | { kind: 'sliding-window'; window: number }
  /** A block mask given by our layout (every block full or empty at this block size). */
  | { kind: 'block-layout'; block: number; layout: () => BlockLayoutRows };

/** A block layout as plain rows, for peers: per Q block, the KV blocks it visits (all full). */
export interface BlockLayoutRows {
  readonly block: number;
  readonly rows: readonly (readonly number[])[];
}

export interface BenchShape {
  batch: number;
  heads: number;
  headsKV: number;
  dim: number;
  dtype: Dtype;
}

export interface BenchCase {
  /** Stable id, e.g. `causal/4k`. */
  readonly id: string;
  readonly suite: SuiteName;
  /** What is computed, e.g. `sliding-window-1024`. */
  readonly variant: string;
  readonly seq: number;
  readonly shape: BenchShape;
  readonly peer: PeerMask | null;
  /** Variant whose backward this one's is compared with (same suite and size), e.g. `causal`. */
  readonly backwardRelativeTo?: string;
  /** Builds the spec (lazily: masks with analytic layouts are cheap, but not free at 1M tokens). */
  build(): AttentionSpec;
  /** The same case at another sequence length (the backward mode checks gradients on a short one). */
  atSeq(seq: number): BenchCase;
}

type Maker = (
  seq: number,
  shape: BenchShape,
) => Omit<BenchCase, 'id' | 'suite' | 'seq' | 'shape' | 'atSeq'>;

interface MakerEntry {
  readonly make: Maker;
  /** Only in backward mode (`--backward`): cases about gradients, such as a learnable score mod. */
  readonly backwardOnly: boolean;
}

export interface BuildOptions {
  /** Include the cases that only the backward mode measures. */
  readonly backward?: boolean;
}

const base = (seq: number, s: BenchShape): AttentionConfig => ({
  batch: s.batch,
  headsQ: s.heads,
  headsKV: s.headsKV,
  seqQ: seq,
  seqKV: seq,
  headDim: s.dim,
  dtype: s.dtype,
});

const causalMask = () => maskMod(({ q, kv }) => q.ge(kv), { name: 'causal' });

/** ALiBi's slopes for `heads` heads: 2^(-8(h+1)/heads). */
export const alibiSlopes = (heads: number): number[] =>
  Array.from({ length: heads }, (_, h) => 2 ** ((-8 * (h + 1)) / heads));

/**
 * Causal attention with per-head ALiBi slopes captured as an f32 tensor, so backward returns the
 * slopes' gradient (a learnable bias): score − slope[h]·(q − kv).
 */
function causalAlibi(seq: number, s: BenchShape): ReturnType<Maker> {
  const slopes = alibiSlopes(s.heads);
  return {
    variant: 'causal-alibi-learned',
    peer: { kind: 'causal-alibi', slopes },
    backwardRelativeTo: 'causal',
    build: () => {
      const t = tensor(Float32Array.from(slopes));
      return defineAttention({
        ...base(seq, s),
        mask: causalMask(),
        scoreMod: scoreMod(({ score, h, q, kv }) => score.sub(t.at(h).mul(q.sub(kv).toFloat())), {
          name: 'alibi-learned',
        }),
      });
    },
  };
}

const always = (make: Maker): MakerEntry => ({ make, backwardOnly: false });

/** Makers per suite; the patterns and variants suites are registered by the packages that provide them. */
const makers: Record<SuiteName, MakerEntry[]> = {
  dense: [
    always((seq, s) => ({
      variant: 'dense',
      peer: { kind: 'dense' },
      build: () => defineAttention(base(seq, s)),
    })),
  ],
  causal: [
    always((seq, s) => ({
      variant: 'causal',
      peer: { kind: 'causal' },
      build: () => defineAttention({ ...base(seq, s), mask: causalMask() }),
    })),
    { make: causalAlibi, backwardOnly: true },
  ],
  patterns: [],
  linear: (['elu+1', 'favor+'] as const).map((featureMap) =>
    always((seq, s) => ({
      variant: `linear-${featureMap}`,
      peer: null,
      build: () =>
        defineAttention({ ...base(seq, s), kernel: { type: 'linear', featureMap, seed: 1 } }),
    })),
  ),
  variants: [],
};

/** Adds a case maker to a suite (the patterns suite is filled in by patterns.ts). */
export function registerMaker(
  suite: SuiteName,
  maker: Maker,
  options: { backwardOnly?: boolean } = {},
): void {
  makers[suite].push({ make: maker, backwardOnly: options.backwardOnly ?? false });
}

export function buildCases(
  suites: readonly SuiteName[],
  seqs: readonly number[],
  shape: BenchShape,
  options: BuildOptions = {},
): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const suite of suites) {
    if (makers[suite].length === 0) {
      throw new Error(
        `suite '${suite}' has no cases yet (it needs @tessera/${suite === 'variants' ? 'variants' : 'patterns'})`,
      );
    }
    for (const seq of seqs) {
      for (const entry of makers[suite]) {
        if (entry.backwardOnly && !options.backward) continue;
        cases.push(caseOf(suite, entry.make, seq, shape));
      }
    }
  }
  return cases;
}

function caseOf(suite: SuiteName, make: Maker, seq: number, shape: BenchShape): BenchCase {
  const c = make(seq, shape);
  return {
    ...c,
    id: `${c.variant}/${formatSeq(seq)}`,
    suite,
    seq,
    shape,
    atSeq: (n) => caseOf(suite, make, n, shape),
  };
}
