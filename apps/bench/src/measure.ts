import {
  type AttentionBackend,
  type AttentionInputs,
  type AttentionOutputs,
  type AttentionSpec,
  elementIndex,
  estimateCost,
  ResourceLimitError,
  type Strategy,
  tensorSizes,
  UnsupportedError,
} from '@tessera/core';
import type { BenchCase } from './suites.js';
import { summarize } from './units.js';

/** Reference rows for the error column: out (rows × headDimV) and lse for each (b, h, q). */
export type ReferenceRows = (
  spec: AttentionSpec,
  inputs: AttentionInputs,
  rows: readonly { b: number; h: number; q: number }[],
) => Promise<{ out: Float32Array; lse: Float32Array }>;

export interface MeasureOptions {
  readonly warmup: number;
  readonly repeat: number;
  /** Also run the naive (materialised N×N) strategy on the same backend. */
  readonly baseline: boolean;
  /** Query rows sampled for the error against the CPU reference. */
  readonly sampleRows: number;
  readonly reference: ReferenceRows;
}

export interface StrategyResult {
  readonly strategy: Strategy;
  readonly status: 'ok' | 'does-not-fit' | 'unsupported' | 'failed';
  readonly message?: string;
  readonly timing?: 'device' | 'wall';
  readonly ms?: { median: number; p10: number; p90: number; n: number };
  /** FLOPs over computed (visited) pairs per second, in TFLOP/s. */
  readonly tflops?: number;
  /** Dense-equivalent FLOPs (4·B·H·N²·D) per second: what the run would have to reach unmasked. */
  readonly effectiveTflops?: number;
  /** Measured memory beyond inputs and outputs where the backend reports it, else null. */
  readonly measuredExtraBytes?: number | null;
  readonly peakDeviceBytes?: number | null;
  /** The cost model's estimate of memory beyond inputs and outputs. */
  readonly estimatedExtraBytes: number;
  readonly maxAbsError?: number;
  readonly relError?: number;
}

export interface CaseResult {
  readonly id: string;
  readonly suite: string;
  readonly variant: string;
  readonly seq: number;
  readonly batch: number;
  readonly heads: number;
  readonly headsKV: number;
  readonly dim: number;
  readonly dtype: string;
  readonly density: number;
  readonly computedPairs: number;
  /** Backward mode: the variant this case's backward is compared with (BenchCase.backwardRelativeTo). */
  readonly backwardRelativeTo?: string;
  readonly strategies: StrategyResult[];
}

/** Fills an array with seeded values uniform in [-1, 1) (xorshift32; fast enough for 10⁸ elements). */
export function fillUniform(out: Float32Array, seed: number): Float32Array {
  let x = (seed * 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

export function makeInputs(spec: AttentionSpec, seed: number): AttentionInputs {
  const n = tensorSizes(spec);
  return {
    q: fillUniform(new Float32Array(n.q), seed * 3 + 1),
    k: fillUniform(new Float32Array(n.k), seed * 3 + 2),
    v: fillUniform(new Float32Array(n.v), seed * 3 + 3),
  };
}

/** Rows spread over the whole output: first, last and evenly spaced (b, h, q) triples. */
export function sampleRows(
  spec: AttentionSpec,
  count: number,
): { b: number; h: number; q: number }[] {
  const total = spec.batch * spec.headsQ * spec.seqQ;
  const n = Math.min(count, total);
  const rows: { b: number; h: number; q: number }[] = [];
  for (let i = 0; i < n; i++) {
    const r = n === 1 ? 0 : Math.round((i * (total - 1)) / (n - 1));
    const q = r % spec.seqQ;
    const bh = Math.floor(r / spec.seqQ);
    rows.push({ b: Math.floor(bh / spec.headsQ), h: bh % spec.headsQ, q });
  }
  return rows;
}

function rowErrors(
  spec: AttentionSpec,
  got: AttentionOutputs,
  ref: { out: Float32Array },
  rows: readonly { b: number; h: number; q: number }[],
): { maxAbs: number; rel: number } {
  let maxAbs = 0;
  let num = 0;
  let den = 0;
  rows.forEach(({ b, h, q }, r) => {
    for (let d = 0; d < spec.headDimV; d++) {
      const g = got.out[
        elementIndex(spec.layout, spec.headsQ, spec.seqQ, spec.headDimV, b, h, q, d)
      ] as number;
      const w = ref.out[r * spec.headDimV + d] as number;
      maxAbs = Math.max(maxAbs, Math.abs(g - w));
      num += (g - w) ** 2;
      den += w * w;
    }
  });
  return { maxAbs, rel: den === 0 ? Math.sqrt(num) : Math.sqrt(num / den) };
}

async function timeWithRun(
  backend: AttentionBackend,
  spec: AttentionSpec,
  sets: readonly AttentionInputs[],
  strategy: Strategy,
  opts: MeasureOptions,
): Promise<{
  timesMs: number[];
  outputs: AttentionOutputs;
  timing: 'wall';
  peak?: number;
  extra?: number;
}> {
  let outputs: AttentionOutputs | undefined;
  for (let i = 0; i < opts.warmup; i++)
    outputs = await backend.run(spec, sets[i % sets.length] as AttentionInputs, { strategy });
  const timesMs: number[] = [];
  for (let i = 0; i < opts.repeat; i++) {
    const t0 = performance.now();
    outputs = await backend.run(spec, sets[i % sets.length] as AttentionInputs, { strategy });
    timesMs.push(performance.now() - t0);
  }
  return { timesMs, outputs: outputs as AttentionOutputs, timing: 'wall' };
}

/** Runs one case on one backend: the tiled kernel and, if asked, the naive baseline. */
export async function measureCase(
  backend: AttentionBackend,
  c: BenchCase,
  opts: MeasureOptions,
): Promise<CaseResult> {
  const spec = c.build();
  const tiled = estimateCost(spec, { strategy: 'tiled' });
  const denseFlops =
    2 * spec.batch * spec.headsQ * spec.seqQ * spec.seqKV * (spec.headDim + spec.headDimV);
  const sets = [makeInputs(spec, 1), makeInputs(spec, 2)];
  const rows = sampleRows(spec, opts.sampleRows);
  const lastSet = sets[(opts.repeat - 1) % sets.length] as AttentionInputs;
  let reference: { out: Float32Array } | undefined;
  const strategies: Strategy[] =
    opts.baseline && spec.kernel.type === 'softmax' ? ['tiled', 'naive'] : ['tiled'];
  const results: StrategyResult[] = [];
  for (const strategy of strategies) {
    const cost = strategy === 'tiled' ? tiled : estimateCost(spec, { strategy });
    try {
      const r = backend.benchmark
        ? await backend.benchmark(spec, sets, {
            warmup: opts.warmup,
            repeat: opts.repeat,
            strategy,
          })
        : await timeWithRun(backend, spec, sets, strategy, opts);
      const ms = summarize(r.timesMs);
      reference ??= await opts.reference(spec, lastSet, rows);
      const err = rowErrors(spec, r.outputs, reference, rows);
      const peak = 'peakDeviceBytes' in r ? r.peakDeviceBytes : undefined;
      const extra = 'extraDeviceBytes' in r ? r.extraDeviceBytes : undefined;
      results.push({
        strategy,
        status: 'ok',
        timing: r.timing,
        ms,
        tflops: cost.flops / (ms.median * 1e-3) / 1e12,
        effectiveTflops: denseFlops / (ms.median * 1e-3) / 1e12,
        measuredExtraBytes: extra ?? null,
        peakDeviceBytes: peak ?? null,
        estimatedExtraBytes: cost.peakExtraBytes,
        maxAbsError: err.maxAbs,
        relError: err.rel,
      });
    } catch (e) {
      const status =
        e instanceof ResourceLimitError
          ? 'does-not-fit'
          : e instanceof UnsupportedError
            ? 'unsupported'
            : 'failed';
      results.push({
        strategy,
        status,
        message: (e as Error).message,
        estimatedExtraBytes: cost.peakExtraBytes,
      });
    }
  }
  return {
    id: c.id,
    suite: c.suite,
    variant: c.variant,
    seq: c.seq,
    batch: spec.batch,
    heads: spec.headsQ,
    headsKV: spec.headsKV,
    dim: spec.headDim,
    dtype: spec.dtype,
    density: spec.kernel.type === 'softmax' ? tiled.density : 1,
    computedPairs: tiled.computedPairs,
    ...(c.backwardRelativeTo ? { backwardRelativeTo: c.backwardRelativeTo } : {}),
    strategies: results,
  };
}
