// What the playground computes for a configuration: the spec, the mask's statistics and cost, and
// a run on a backend compared with the CPU reference. Platform-neutral (runs in Node for tests).
import {
  type AttentionBackend,
  type AttentionOutputs,
  type AttentionSpec,
  blockLayout,
  type CostEstimate,
  defineAttention,
  estimateCost,
  type Mask,
  tensorSizes,
} from '@tessera/core';
import { type PatternStats, stats } from '@tessera/patterns';
import { findPattern, type PatternEntry } from './catalog.js';
import type { PlaygroundState } from './state.js';

export interface Configured {
  readonly entry: PatternEntry;
  readonly mask: Mask;
  readonly spec: AttentionSpec;
  readonly stats: PatternStats;
  /** This pattern, tiled over its block layout. */
  readonly tiled: CostEstimate;
  /** The same shapes with no mask: tiled (flash-style) and naive (the N×N scores materialised). */
  readonly denseTiled: CostEstimate;
  readonly denseNaive: CostEstimate;
  /** The @tessera/patterns call that builds the mask. */
  readonly code: string;
}

/** Builds the spec of a playground configuration; throws the library's typed errors. */
export function configure(state: PlaygroundState): Configured {
  const entry = findPattern(state.pattern);
  if (!entry) throw new Error(`unknown pattern '${state.pattern}'`);
  const mask = entry.build(state.params, state.seq);
  const shape = {
    batch: 1,
    headsQ: state.heads,
    headsKV: state.heads,
    seqQ: state.seq,
    seqKV: state.seq,
    headDim: state.headDim,
    dtype: 'f32' as const,
    tiling: { blockQ: state.block, blockKV: state.block },
  };
  const spec = defineAttention({ ...shape, mask });
  const dense = defineAttention(shape);
  const blocks = { blockQ: state.block, blockKV: state.block };
  return {
    entry,
    mask,
    spec,
    stats: stats(mask, state.seq, state.seq, { ...blocks, headsQ: state.heads }),
    tiled: estimateCost(spec, { strategy: 'tiled', layout: blockLayout(spec, blocks) }),
    denseTiled: estimateCost(dense, { strategy: 'tiled' }),
    denseNaive: estimateCost(dense, { strategy: 'naive' }),
    code: entry.code(state.params, state.seq),
  };
}

/** Seeded uniform values in [-1, 1) (xorshift32), so a shared link reproduces the same inputs. */
export function uniform(length: number, seed: number): Float32Array {
  const out = new Float32Array(length);
  let x = Math.imul(seed + 1, 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export function makeInputs(spec: AttentionSpec, seed: number) {
  const n = tensorSizes(spec);
  return {
    q: uniform(n.q, 3 * seed + 1),
    k: uniform(n.k, 3 * seed + 2),
    v: uniform(n.v, 3 * seed + 3),
  };
}

/**
 * Largest |a − b|. Two equal infinities (a fully masked row's lse is −∞ on both sides) count as
 * no error; an infinity or NaN on one side only makes the error infinite.
 */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (x === y) continue;
    const d = Math.abs(x - y);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

/** What the playground accepts as "matches the reference" for f32 on a device vs f64 on the CPU. */
export const TOLERANCE = { out: 2e-4, lse: 2e-4 } as const;

export interface Comparison {
  readonly backend: string;
  readonly device?: string;
  /** The first run includes compiling the kernel; the second reuses it. */
  readonly firstMs: number;
  readonly secondMs: number;
  readonly referenceMs: number;
  readonly referenceStrategy: 'naive' | 'tiled';
  readonly outError: number;
  readonly lseError: number;
  readonly matches: boolean;
}

/**
 * Runs `spec` on `backend` (twice, timed) and on the CPU `reference`, and compares the outputs.
 * The reference uses the naive strategy (the full score matrix, independent of the block layout)
 * while it fits in `naiveLimitBytes`.
 */
export async function compare(
  backend: AttentionBackend,
  reference: AttentionBackend,
  spec: AttentionSpec,
  seed: number,
  naiveLimitBytes = 256 * 1024 ** 2,
): Promise<Comparison & { readonly outputs: AttentionOutputs }> {
  const inputs = makeInputs(spec, seed);
  let t = performance.now();
  await backend.run(spec, inputs);
  const firstMs = performance.now() - t;
  t = performance.now();
  const outputs = await backend.run(spec, inputs);
  const secondMs = performance.now() - t;
  const referenceStrategy =
    estimateCost(spec, { strategy: 'naive' }).peakExtraBytes <= naiveLimitBytes ? 'naive' : 'tiled';
  t = performance.now();
  const ref = await reference.run(spec, inputs, { strategy: referenceStrategy });
  const referenceMs = performance.now() - t;
  const outError = maxAbsDiff(outputs.out, ref.out);
  const lseError = maxAbsDiff(outputs.lse, ref.lse);
  return {
    backend: backend.name,
    ...(backend.device ? { device: backend.device } : {}),
    firstMs,
    secondMs,
    referenceMs,
    referenceStrategy,
    outError,
    lseError,
    matches: outError <= TOLERANCE.out && lseError <= TOLERANCE.lse,
    outputs,
  };
}

/** 1234567 → "1.23 M", for FLOPs and pair counts. */
export function formatCount(x: number): string {
  const units = ['', ' k', ' M', ' G', ' T', ' P'];
  let i = 0;
  let v = x;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? String(Math.round(v)) : v.toPrecision(3)}${units[i]}`;
}

/** 1536 → "1.50 KiB". */
export function formatBytes(x: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = x;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
}
