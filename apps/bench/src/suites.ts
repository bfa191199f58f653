import {
  type AttentionConfig,
  type AttentionSpec,
  type Dtype,
  defineAttention,
  maskMod,
} from '@tessera/core';
import { formatSeq } from './units.js';

export const SUITES = ['dense', 'causal', 'patterns', 'linear', 'variants'] as const;
export type SuiteName = (typeof SUITES)[number];

/** How a peer (PyTorch SDPA / FlexAttention) expresses the same computation; null where it cannot. */
export type PeerMask =
  | { kind: 'dense' }
  | { kind: 'causal' }
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
  /** Builds the spec (lazily: masks with analytic layouts are cheap, but not free at 1M tokens). */
  build(): AttentionSpec;
}

type Maker = (seq: number, shape: BenchShape) => Omit<BenchCase, 'id' | 'suite' | 'seq' | 'shape'>;

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

/** Makers per suite; the patterns and variants suites are registered by the packages that provide them. */
const makers: Record<SuiteName, Maker[]> = {
  dense: [
    (seq, s) => ({
      variant: 'dense',
      peer: { kind: 'dense' },
      build: () => defineAttention(base(seq, s)),
    }),
  ],
  causal: [
    (seq, s) => ({
      variant: 'causal',
      peer: { kind: 'causal' },
      build: () => defineAttention({ ...base(seq, s), mask: causalMask() }),
    }),
  ],
  patterns: [],
  linear: (['elu+1', 'favor+'] as const).map(
    (featureMap): Maker =>
      (seq, s) => ({
        variant: `linear-${featureMap}`,
        peer: null,
        build: () =>
          defineAttention({ ...base(seq, s), kernel: { type: 'linear', featureMap, seed: 1 } }),
      }),
  ),
  variants: [],
};

/** Adds a case maker to a suite (the patterns suite is filled in by patterns.ts). */
export function registerMaker(suite: SuiteName, maker: Maker): void {
  makers[suite].push(maker);
}

export function buildCases(
  suites: readonly SuiteName[],
  seqs: readonly number[],
  shape: BenchShape,
): BenchCase[] {
  const cases: BenchCase[] = [];
  for (const suite of suites) {
    if (makers[suite].length === 0) {
      throw new Error(
        `suite '${suite}' has no cases yet (it needs @tessera/${suite === 'variants' ? 'variants' : 'patterns'})`,
      );
    }
    for (const seq of seqs) {
      for (const make of makers[suite]) {
        const c = make(seq, shape);
        cases.push({ ...c, id: `${c.variant}/${formatSeq(seq)}`, suite, seq, shape });
      }
    }
  }
  return cases;
}
